// The observer's WebSocket protocol (docs/observer-protocol.md), with no DOM and no socket in it:
// building and checking client messages, checking server messages, and ObserverModel, which
// folds server messages into what the page shows. Node's test runner loads this module against
// the golden files in tests/data/observer/golden/, like the C++ tests do.

export const PROTOCOL_VERSION = 1;
export const MODES = ['periodic', 'manual', 'live'];
export const UPDATE_TYPES = ['periodic', 'manual'];
export const NODE_STATUSES = ['initializing', 'waiting', 'working', 'paused', 'dead'];
export const MIN_INTERVAL_MS = 100;
export const MAX_INTERVAL_MS = 3600000;
export const MAX_PREFIXES = 64;
export const MAX_MESSAGE_BYTES = 65536;
const CLIENT_TYPES = ['update_request', 'set_mode', 'subscribe', 'ping'];

/** A message that does not follow the protocol; `reason` is one of the server's error codes. */
export class ProtocolError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'ProtocolError';
    this.reason = reason;
  }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isInt = (v) => Number.isInteger(v);

// ---------------------------------------------------------------------------------------------
// Paths: dotted, with `\.` and `\\` escapes and `\e` for an empty key that is the whole path
// (core::Path::ToString / Parse).

/** Splits a dotted path into its segments; throws ProtocolError on a bad escape. "" is the root. */
export function splitPath(dotted) {
  if (typeof dotted !== 'string') throw new ProtocolError('bad_payload', 'a path must be a string');
  if (dotted === '') return [];
  const segments = [];
  let current = '';
  for (let i = 0; i < dotted.length; i++) {
    const c = dotted[i];
    if (c === '\\') {
      const next = dotted[i + 1];
      if (next === undefined) {
        throw new ProtocolError('bad_payload', `path '${dotted}' ends with a dangling backslash`);
      }
      if (next === 'e') {
        // `\e` is the empty key as a whole segment (the one-segment path [""]; "" is the root).
        const starts = i === 0 || dotted[i - 1] === '.';
        const ends = i + 2 === dotted.length || dotted[i + 2] === '.';
        if (!starts || !ends || current !== '') {
          throw new ProtocolError('bad_payload', `path '${dotted}': '\\e' (the empty key) must be a whole segment`);
        }
        i++;
        continue;
      }
      if (next !== '.' && next !== '\\') {
        throw new ProtocolError(
          'bad_payload',
          `path '${dotted}': only '\\.', '\\\\' and '\\e' (the empty key) are valid escapes`,
        );
      }
      current += next;
      i++;
    } else if (c === '.') {
      segments.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  segments.push(current);
  return segments;
}

/** The dotted form of segments (inverse of splitPath). */
export function joinPath(segments) {
  if (segments.length === 1 && segments[0] === '') return '\\e'; // "" would be the root
  return segments.map((s) => s.replace(/[\\.]/g, (m) => '\\' + m)).join('.');
}

/** Whether `path` is `prefix` or under it (segment-wise, so "nodes.w1" is not under "nodes.w"). */
export function pathUnder(path, prefix) {
  const p = Array.isArray(path) ? path : splitPath(path);
  const q = Array.isArray(prefix) ? prefix : splitPath(prefix);
  if (q.length > p.length) return false;
  return q.every((s, i) => s === p[i]);
}

// ---------------------------------------------------------------------------------------------
// Client -> server.

/** `update_request`; `updateType` is "periodic" (the timer) or "manual" (the refresh button). */
export function updateRequest(updateType) {
  if (!UPDATE_TYPES.includes(updateType)) {
    throw new ProtocolError('bad_payload', `update_type must be "periodic" or "manual", not ${JSON.stringify(updateType)}`);
  }
  return { type: 'update_request', payload: { update_type: updateType } };
}

/** `set_mode`; `intervalMs` only for periodic (100 … 3600000 ms; omitted keeps the server's). */
export function setMode(mode, intervalMs) {
  if (!MODES.includes(mode)) {
    throw new ProtocolError('bad_payload', `mode must be one of ${MODES.join(', ')}, not ${JSON.stringify(mode)}`);
  }
  const payload = { mode };
  if (mode === 'periodic' && intervalMs !== undefined) {
    checkInterval(intervalMs);
    payload.interval_ms = intervalMs;
  }
  return { type: 'set_mode', payload };
}

/** Throws ProtocolError unless `ms` is a whole number of ms in the allowed range. */
export function checkInterval(ms) {
  if (!isInt(ms) || ms < MIN_INTERVAL_MS || ms > MAX_INTERVAL_MS) {
    throw new ProtocolError('bad_payload', `interval_ms must be an integer from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}, not ${JSON.stringify(ms)}`);
  }
  return ms;
}

/** `subscribe` to changes under the given dotted prefixes ([] = everything). */
export function subscribe(prefixes) {
  return validateClientMessage({ type: 'subscribe', payload: { prefixes } });
}

/** `ping`; the server echoes `t` in its `pong`. */
export function ping(t) {
  return { type: 'ping', payload: { t } };
}

/** The wire text of a client message. */
export function encode(message) {
  const text = JSON.stringify(message);
  if (text.length > MAX_MESSAGE_BYTES) {
    throw new ProtocolError('too_big', `a client message is at most ${MAX_MESSAGE_BYTES} bytes`);
  }
  return text;
}

/**
 * Checks a client message (an object, or the text of a frame) by the server's rules and returns
 * the object; throws ProtocolError with the reason the server would answer (`malformed`,
 * `unknown_type`, `bad_payload`). The page never sends what this rejects.
 */
export function validateClientMessage(message) {
  let m = message;
  if (typeof m === 'string') {
    try {
      m = JSON.parse(m);
    } catch (e) {
      throw new ProtocolError('malformed', `not JSON: ${e.message}`);
    }
  }
  if (!isObject(m)) throw new ProtocolError('malformed', 'a message must be a JSON object');
  if (typeof m.type !== 'string') throw new ProtocolError('malformed', 'a message needs a string "type"');
  if (!isObject(m.payload)) throw new ProtocolError('malformed', `${m.type}: "payload" must be an object`);
  const p = m.payload;
  switch (m.type) {
    case 'update_request':
      if (!UPDATE_TYPES.includes(p.update_type)) {
        throw new ProtocolError('bad_payload', 'update_request: payload.update_type must be "periodic" or "manual"');
      }
      break;
    case 'set_mode':
      if (!MODES.includes(p.mode)) {
        throw new ProtocolError('bad_payload', `set_mode: payload.mode must be one of ${MODES.join(', ')}`);
      }
      if (p.interval_ms !== undefined) checkInterval(p.interval_ms);
      break;
    case 'subscribe':
      if (!Array.isArray(p.prefixes) || p.prefixes.length > MAX_PREFIXES) {
        throw new ProtocolError('bad_payload', `subscribe: payload.prefixes must be a list of at most ${MAX_PREFIXES} paths`);
      }
      for (const prefix of p.prefixes) splitPath(prefix);
      break;
    case 'ping':
      break;
    default:
      throw new ProtocolError('unknown_type', `unknown message type '${m.type}'; expected ${CLIENT_TYPES.join(', ')}`);
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Server -> client.

const need = (cond, type, what) => {
  if (!cond) throw new ProtocolError('malformed', `${type}: ${what}`);
};

function checkSummary(s, where) {
  need(isObject(s), where, 'summary must be an object');
  need(isObject(s.nodes) && Array.isArray(s.nodes.list), where, 'summary.nodes.list must be a list');
  need(isObject(s.jobs), where, 'summary.jobs must be an object');
  for (const n of s.nodes.list) need(isObject(n) && typeof n.id === 'string', where, 'each node needs a string id');
}

function checkChange(c, where) {
  need(isObject(c) && typeof c.path === 'string', where, 'a change needs a string path');
  need(c.stamp === null || c.stamp === undefined || isObject(c.stamp), where, 'a change stamp must be an object');
}

/**
 * Parses and checks one server frame (text or object). Returns `{type, payload}`; throws
 * ProtocolError for a frame that breaks the protocol. Unknown types pass (clients must ignore
 * what they do not know).
 */
export function parseServerMessage(frame) {
  let m = frame;
  if (typeof m === 'string') {
    try {
      m = JSON.parse(m);
    } catch (e) {
      throw new ProtocolError('malformed', `server frame is not JSON: ${e.message}`);
    }
  }
  need(isObject(m) && typeof m.type === 'string', 'server message', 'needs a string "type"');
  need(isObject(m.payload), m.type, '"payload" must be an object');
  const p = m.payload;
  switch (m.type) {
    case 'hello':
      need(isInt(p.protocol), 'hello', 'protocol must be an integer');
      break;
    case 'mode':
      need(MODES.includes(p.mode), 'mode', `unknown mode ${JSON.stringify(p.mode)}`);
      break;
    case 'snapshot':
    case 'summary':
      checkSummary(p.summary, m.type);
      break;
    case 'changes':
      need(Array.isArray(p.changes), 'changes', 'changes must be a list');
      p.changes.forEach((c) => checkChange(c, 'changes'));
      break;
    case 'worker_node_status_change':
      need(typeof p.workerNodeId === 'string', m.type, 'workerNodeId must be a string');
      need(p.newStatus === null || typeof p.newStatus === 'string', m.type, 'newStatus must be a string or null');
      break;
    case 'batched_update_response':
      need(Array.isArray(p.messages), m.type, 'messages must be a list');
      p.messages.forEach((inner) => parseServerMessage(inner));
      break;
    case 'error':
      need(typeof p.reason === 'string', 'error', 'reason must be a string');
      break;
    default:
      break;
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// The page's model.

/** Median of numbers (null for none). */
export function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * Everything the page shows, folded from server messages. `apply(message, nowMs)` returns what
 * changed: `{summary, statusEvents, changes, mode, latency, error, refetch}` (booleans), so the
 * page redraws only those parts. `nowMs` is the page's wall clock when the message arrived.
 */
export class ObserverModel {
  constructor({ historyLimit = 120, eventLimit = 50, changeLimit = 200, latencyWindowMs = 5000 } = {}) {
    this.historyLimit = historyLimit;
    this.eventLimit = eventLimit;
    this.changeLimit = changeLimit;
    this.latencyWindowMs = latencyWindowMs;
    this.hello = null;
    this.mode = 'periodic';
    this.intervalMs = 1000;
    this.prefixes = [];
    this.summary = null;
    this.commit = 0;
    this.lastUpdateAt = null; // wall ms of the last summary/snapshot
    this.lastSnapshotReason = null;
    this.statusEvents = []; // newest first
    this.recentChanges = []; // newest first
    this.latencySamples = []; // {at, ms}
    this.counterHistory = new Map(); // path -> [{t, value, rate}]
    this.lastError = null;
    this.rtt = null;
    this.batches = 0;
  }

  /** Live latency: the median over the last few seconds of (arrival - event time), or null. */
  get latencyMs() {
    return median(this.latencySamples.map((s) => s.ms));
  }

  /** The last latency sample (ms), or null. */
  get lastLatencyMs() {
    return this.latencySamples.length ? this.latencySamples[this.latencySamples.length - 1].ms : null;
  }

  apply(message, nowMs = Date.now()) {
    const m = parseServerMessage(message);
    const what = { summary: false, statusEvents: false, changes: false, mode: false, latency: false, error: false, refetch: false };
    this.#apply(m, nowMs, what, false);
    return what;
  }

  #apply(m, now, what, inBatch) {
    const p = m.payload;
    switch (m.type) {
      case 'hello':
        this.hello = p;
        if (MODES.includes(p.mode)) this.mode = p.mode;
        if (isInt(p.interval_ms)) this.intervalMs = p.interval_ms;
        what.mode = true;
        break;
      case 'mode':
        this.mode = p.mode;
        if (isInt(p.interval_ms)) this.intervalMs = p.interval_ms;
        this.prefixes = Array.isArray(p.prefixes) ? p.prefixes : [];
        what.mode = true;
        break;
      case 'snapshot':
        this.lastSnapshotReason = p.reason ?? null;
        if (p.reason && p.reason !== 'connect') what.refetch = true;
        this.#setSummary(p.summary, p.commit, now);
        what.summary = true;
        break;
      case 'summary':
        this.#setSummary(p.summary, p.commit, now);
        what.summary = true;
        break;
      case 'changes':
        for (const c of p.changes) {
          this.recentChanges.unshift(c);
          // Live latency: arrival time minus the event time of each change (protocol: the page
          // uses its own arrival time). Batched changes are old by design, so they do not count.
          if (!inBatch && this.mode === 'live' && c.stamp && Number.isFinite(c.stamp.ts)) {
            this.#latency(now - c.stamp.ts, now);
            what.latency = true;
          }
        }
        this.recentChanges.length = Math.min(this.recentChanges.length, this.changeLimit);
        what.changes = true;
        break;
      case 'worker_node_status_change':
        this.statusEvents.unshift({ ...p, receivedAt: now });
        this.statusEvents.length = Math.min(this.statusEvents.length, this.eventLimit);
        what.statusEvents = true;
        if (!inBatch && this.mode === 'live' && Number.isFinite(p.updatedAt)) {
          this.#latency(now - p.updatedAt, now);
          what.latency = true;
        }
        // Show the new status at once, before the next summary.
        if (this.summary) this.#patchNodeStatus(p);
        what.summary = true;
        break;
      case 'batched_update_response':
        this.batches++;
        for (const inner of p.messages) this.#apply(inner, now, what, true);
        break;
      case 'pong':
        if (Number.isFinite(p.t)) this.rtt = now - p.t;
        break;
      case 'error':
        this.lastError = { ...p, at: now };
        what.error = true;
        break;
      default:
        break; // unknown types are ignored (protocol: the server may add some)
    }
  }

  #latency(ms, now) {
    this.latencySamples.push({ at: now, ms: Math.max(0, ms) });
    while (this.latencySamples.length > 1 && this.latencySamples[0].at < now - this.latencyWindowMs) {
      this.latencySamples.shift();
    }
    if (this.latencySamples.length > 1000) this.latencySamples.splice(0, this.latencySamples.length - 1000);
  }

  #patchNodeStatus(p) {
    const list = this.summary.nodes.list;
    const i = list.findIndex((n) => n.id === p.workerNodeId);
    if (p.newStatus === null) {
      if (i >= 0) list.splice(i, 1);
    } else if (i >= 0) {
      list[i] = { ...list[i], status: p.newStatus };
    } else {
      list.push({ id: p.workerNodeId, status: p.newStatus });
      list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    }
    this.summary.nodes.by_status = countStatuses(list);
    this.summary.nodes.count = list.length;
    this.summary.nodes.live = list.filter((n) => n.status !== 'dead').length;
  }

  #setSummary(summary, commit, now) {
    this.summary = summary;
    if (isInt(commit)) this.commit = commit;
    this.lastUpdateAt = now;
    const t = isInt(summary.time) ? summary.time : now;
    const seen = new Set();
    for (const c of summary.counters ?? []) {
      seen.add(c.path);
      let h = this.counterHistory.get(c.path);
      if (!h) this.counterHistory.set(c.path, (h = []));
      const last = h[h.length - 1];
      if (last && last.t === t && last.value === c.value) continue; // same observation again
      h.push({ t, value: c.value, rate: c.rate ?? null });
      if (h.length > this.historyLimit) h.splice(0, h.length - this.historyLimit);
    }
    for (const path of this.counterHistory.keys()) {
      if (!seen.has(path)) this.counterHistory.delete(path);
    }
  }
}

/** `by_status` of a node list: every one of the five statuses, counted. */
export function countStatuses(list) {
  const out = Object.fromEntries(NODE_STATUSES.map((s) => [s, 0]));
  for (const n of list) if (n.status in out) out[n.status]++;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reconnecting.

/**
 * The delay before reconnect attempt `attempt` (0-based): exponential from `baseMs` to `maxMs`,
 * with up to `jitter` of it random (`random` in [0,1)), so many pages do not reconnect in step.
 */
export function backoffDelay(attempt, { baseMs = 250, maxMs = 8000, jitter = 0.2, random = Math.random } = {}) {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(exp * (1 - jitter + jitter * random()));
}
