// Unit tests of observer/web/js/protocol.js against the golden messages the C++ tests share
// (tests/data/observer/golden/, docs/observer-protocol.md). Run: node --test tests/web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  ObserverModel, ProtocolError, backoffDelay, checkInterval, countStatuses, encode, joinPath, median,
  parseServerMessage, pathUnder, ping, setMode, splitPath, subscribe, updateRequest, validateClientMessage,
} from '../../observer/web/js/protocol.js';

const here = dirname(fileURLToPath(import.meta.url));
const goldenDir = process.env.LATTICE_GOLDEN_DIR ?? join(here, '..', 'data', 'observer', 'golden');
const golden = (name) => JSON.parse(readFileSync(join(goldenDir, name), 'utf8'));

test('client builders produce exactly the golden client messages', () => {
  assert.deepEqual(updateRequest('periodic'), golden('update_request_periodic.json'));
  assert.deepEqual(updateRequest('manual'), golden('update_request_manual.json'));
  assert.deepEqual(setMode('periodic', 2000), golden('set_mode_periodic.json'));
  assert.deepEqual(setMode('live'), golden('set_mode_live.json'));
  assert.deepEqual(setMode('manual'), golden('set_mode_manual.json'));
  assert.deepEqual(subscribe(['nodes', 'jobs']), golden('subscribe.json'));
  assert.deepEqual(ping(12345), golden('ping.json'));
  for (const name of ['update_request_periodic.json', 'set_mode_live.json', 'subscribe.json', 'ping.json']) {
    assert.deepEqual(validateClientMessage(encode(golden(name))), golden(name));
  }
});

test('every bad client frame is rejected with the reason the server gives', () => {
  const bad = readdirSync(goldenDir).filter((f) => f.startsWith('bad_') && f.endsWith('.txt'));
  assert.ok(bad.length >= 5, `found only ${bad.length} bad_*.txt goldens`);
  for (const name of bad) {
    const text = readFileSync(join(goldenDir, name), 'utf8');
    const nl = text.indexOf('\n');
    const reason = text.slice(0, nl).trim();
    const frame = text.slice(nl + 1).replace(/\n$/, '');
    assert.throws(() => validateClientMessage(frame), (e) => e instanceof ProtocolError && e.reason === reason,
      `${name}: expected ${reason}`);
  }
});

test('builders refuse what the server would refuse', () => {
  assert.throws(() => updateRequest('sometimes'), ProtocolError);
  assert.throws(() => setMode('turbo'), ProtocolError);
  assert.throws(() => setMode('periodic', 5), ProtocolError);
  assert.throws(() => setMode('periodic', 1.5e3 + 0.5), ProtocolError);
  assert.throws(() => checkInterval(3600001), ProtocolError);
  assert.equal(checkInterval(100), 100);
  assert.deepEqual(setMode('periodic'), { type: 'set_mode', payload: { mode: 'periodic' } });
  assert.throws(() => subscribe(['a\\x']), ProtocolError);
  assert.throws(() => subscribe(new Array(65).fill('a')), ProtocolError);
  assert.throws(() => encode(ping('x'.repeat(70000))), (e) => e.reason === 'too_big');
});

test('every server golden parses', () => {
  for (const name of readdirSync(goldenDir)) {
    if (!name.endsWith('.json')) continue;
    const m = golden(name);
    if (['update_request', 'set_mode', 'subscribe', 'ping'].includes(m.type)) continue;
    assert.deepEqual(parseServerMessage(JSON.stringify(m)), m, name);
  }
  assert.throws(() => parseServerMessage('{"type":'), ProtocolError);
  assert.throws(() => parseServerMessage('{"type":"summary","payload":{"summary":{}}}'), ProtocolError);
  assert.throws(() => parseServerMessage('{"type":"changes","payload":{"changes":{}}}'), ProtocolError);
  // Unknown types pass: clients ignore what they do not know.
  assert.equal(parseServerMessage('{"type":"future_thing","payload":{}}').type, 'future_thing');
});

test('paths: escapes round-trip, prefixes match segment-wise', () => {
  assert.deepEqual(splitPath('scrape.example\\.com.item_collected'), ['scrape', 'example.com', 'item_collected']);
  assert.deepEqual(splitPath('a\\\\b.c'), ['a\\b', 'c']);
  assert.deepEqual(splitPath(''), []);
  assert.deepEqual(splitPath('a..b'), ['a', '', 'b']);
  assert.throws(() => splitPath('a\\'), ProtocolError);
  // The one-segment path [""] is `\e` ("" is the root); `\e` is only valid as a whole segment.
  assert.equal(joinPath(['']), '\\e');
  assert.deepEqual(splitPath('\\e'), ['']);
  assert.deepEqual(splitPath('a.\\e.b'), ['a', '', 'b']);
  for (const bad of ['a\\e', '\\ea', '\\e\\e', 'a.\\eb', '\\.\\e']) {
    assert.throws(() => splitPath(bad), ProtocolError, bad);
  }
  for (const segs of [[''], ['', ''], ['a', ''], ['', 'b'], ['e'], ['\\e']]) {
    assert.deepEqual(splitPath(joinPath(segs)), segs);
  }
  for (const p of ['scrape.example\\.com.item_collected', 'a\\\\b.c', 'x', 'nodes.w1.status']) {
    assert.equal(joinPath(splitPath(p)), p);
  }
  assert.ok(pathUnder('nodes.w1.status', 'nodes.w1'));
  assert.ok(pathUnder('nodes.w1', 'nodes.w1'));
  assert.ok(!pathUnder('nodes.w10', 'nodes.w1'));
  assert.ok(pathUnder('anything', ''));
});

test('the model takes the snapshot, then a batch, as the golden summary says', () => {
  const model = new ObserverModel();
  model.apply(golden('hello.json'), 1000);
  assert.equal(model.mode, 'periodic');
  assert.equal(model.intervalMs, 1000);
  const what = model.apply(golden('snapshot.json'), 2000);
  assert.ok(what.summary);
  assert.ok(!what.refetch, 'a connect snapshot needs no re-fetch');
  const s = model.summary;
  assert.equal(s.nodes.count, 3);
  assert.deepEqual(s.nodes.list.map((n) => [n.id, n.status]), [['w1', 'working'], ['w2', 'waiting'], ['w3', 'dead']]);
  assert.deepEqual(s.nodes.by_status, countStatuses(s.nodes.list));
  assert.equal(s.jobs.queued, 10);
  assert.equal(s.queue.sections.length, 2);
  assert.equal(model.lastUpdateAt, 2000);

  const batch = golden('batched_update_response.json');
  const w = model.apply(batch, 3000);
  assert.ok(w.summary && w.changes && w.statusEvents);
  assert.ok(!w.latency, 'batched changes are not live latency');
  assert.equal(model.statusEvents[0].workerNodeId, 'w3');
  assert.equal(model.statusEvents[0].newStatus, 'dead');
  assert.equal(model.recentChanges.length, 3);
  assert.equal(model.recentChanges[0].path, 'jobs.3', 'newest change first');
  assert.equal(model.batches, 1);
  // The batch's last message is the summary: the model holds it.
  const inner = batch.payload.messages.at(-1).payload;
  assert.deepEqual(model.summary, inner.summary);
  assert.equal(model.commit, inner.commit);
});

test('a snapshot that is not the connect one asks the page to re-fetch', () => {
  const model = new ObserverModel();
  const snap = golden('snapshot.json');
  snap.payload.reason = 'overflow';
  assert.ok(model.apply(snap, 1).refetch);
});

test('live mode: status changes patch the view at once and latency is arrival minus event time', () => {
  const model = new ObserverModel();
  model.apply(golden('snapshot.json'), 0);
  model.apply(golden('mode_live.json'), 0);
  assert.equal(model.mode, 'live');
  const change = golden('worker_node_status_change.json'); // w3 working -> dead at 1732350000000
  change.payload.workerNodeId = 'w2';
  change.payload.oldStatus = 'waiting';
  change.payload.newStatus = 'paused';
  const what = model.apply(change, 1732350000040);
  assert.ok(what.latency && what.summary);
  assert.equal(model.summary.nodes.list.find((n) => n.id === 'w2').status, 'paused');
  assert.equal(model.summary.nodes.by_status.paused, 1);
  assert.equal(model.summary.nodes.by_status.waiting, 0);
  assert.equal(model.lastLatencyMs, 40);

  // changes.json: ts 123, 200, 300 after ...000000; arriving at ...000400 -> 277, 200, 100.
  model.apply(golden('changes.json'), 1732350000400);
  assert.equal(model.lastLatencyMs, 100);
  assert.equal(model.latencyMs, median([40, 277, 200, 100]));
  // Old samples fall out of the window.
  model.apply(golden('changes.json'), 1732350000400 + 10000);
  assert.ok(model.latencySamples.every((x) => x.at >= 1732350000400 + 10000 - model.latencyWindowMs));

  // A node that vanished (newStatus null) leaves the list.
  model.apply({ type: 'worker_node_status_change', payload: { workerNodeId: 'w1', oldStatus: 'working', newStatus: null, updatedAt: 1 } }, 2);
  assert.deepEqual(model.summary.nodes.list.map((n) => n.id), ['w2', 'w3']);
  assert.equal(model.summary.nodes.count, 2);
});

test('periodic mode: changes do not count as latency; errors and pongs are kept', () => {
  const model = new ObserverModel();
  model.apply(golden('changes.json'), 1732350000400);
  assert.equal(model.latencyMs, null);
  const err = model.apply(golden('error_not_in_live_mode.json'), 5);
  assert.ok(err.error);
  assert.equal(model.lastError.reason, 'not_in_live_mode');
  model.apply(golden('pong.json'), 12400);
  assert.equal(model.rtt, 55);
});

test('counter history grows per new observation and drops counters that vanished', () => {
  const model = new ObserverModel({ historyLimit: 3 });
  const snap = golden('snapshot.json');
  const path = snap.payload.summary.counters[0].path;
  for (let i = 0; i < 5; i++) {
    snap.payload.summary.time = 1000 + i;
    snap.payload.summary.counters[0].value = 10 * i;
    snap.payload.summary.counters[0].rate = i;
    model.apply(snap, i);
  }
  assert.deepEqual(model.counterHistory.get(path).map((h) => h.value), [20, 30, 40]);
  model.apply(snap, 6); // same time and value: not a new observation
  assert.equal(model.counterHistory.get(path).length, 3);
  snap.payload.summary.counters = [];
  model.apply(snap, 7);
  assert.equal(model.counterHistory.size, 0);
});

test('reconnect backoff grows exponentially to a cap, with bounded jitter', () => {
  const fixed = { random: () => 1 - 1e-9, jitter: 0.2 };
  const d = [0, 1, 2, 3, 4, 5, 6, 10].map((a) => backoffDelay(a, fixed));
  assert.deepEqual(d, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
  for (let a = 0; a < 8; a++) {
    const v = backoffDelay(a, { random: () => 0 });
    assert.ok(v >= 0.8 * Math.min(8000, 250 * 2 ** a) - 1 && v <= Math.min(8000, 250 * 2 ** a));
  }
});
