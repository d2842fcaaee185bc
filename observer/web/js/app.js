// The observer page: wires the connection, the model and the views. Every view updates its DOM
// in place (keyed by id) so nothing jumps or flickers between updates.
import { NODE_STATUSES, ObserverModel, MIN_INTERVAL_MS, MAX_INTERVAL_MS } from './protocol.js';
import { ObserverConnection } from './connection.js';
import { StateExplorer } from './explorer.js';
import { ago, clock, compactJson, el, formatDuration, formatNumber, formatRate, nodeColor, pathSpans, setText, sparkline, svgEl } from './format.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const params = new URLSearchParams(location.search);
const token = params.get('token');

// ---------------------------------------------------------------------------------------------
// Network.

async function fetchJson(path) {
  try {
    const r = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
    let body = null;
    try {
      body = await r.json();
    } catch {
      body = null;
    }
    if (!r.ok) return { ok: false, status: r.status, error: body?.error ?? `HTTP ${r.status}` };
    return { ok: true, status: r.status, body };
  } catch (e) {
    return { ok: false, status: 0, error: String(e.message ?? e) };
  }
}

function streamUrl() {
  const u = new URL('/v1/stream', location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

// ---------------------------------------------------------------------------------------------
// Views.

const model = new ObserverModel();
const nodeTiles = new Map();
const counterRows = new Map();
const jobRows = new Map();

function render(what) {
  const s = model.summary;
  if (what.summary && s) {
    renderStats(s);
    renderNodes(s);
    renderQueue(s);
    renderCounters(s);
    renderChecks(s);
    renderErrors(s);
  }
  if (what.statusEvents) renderStatusEvents();
  if (what.mode) renderMode();
  if (what.error) renderError();
  renderReadouts();
  if (what.refetch) explorer.load();
}

function renderStats(s) {
  const n = s.nodes;
  setText($('node-count'), formatNumber(n.count));
  setText($('node-live'), `${formatNumber(n.live)} live`);
  const dead = n.by_status?.dead ?? 0;
  const nodeSub = $('node-live');
  if (dead) setText(nodeSub, `${formatNumber(n.live)} live · ${dead} dead`);
  nodeSub.classList.toggle('bad', dead > 0);
  const j = s.jobs;
  setText($('jobs-running'), formatNumber(j.running ?? 0));
  setText($('jobs-running-sub'), `on ${formatNumber(n.by_status?.working ?? 0)} working nodes`);
  setText($('jobs-queued'), formatNumber(j.queued ?? 0));
  setText($('jobs-queued-sub'), j.lowest_unfinished !== null && j.lowest_unfinished !== undefined ? `next id ${j.lowest_unfinished}` : 'queue empty');
  setText($('jobs-done'), formatNumber(j.done ?? 0));
  setText($('jobs-failed'), `${formatNumber(j.failed ?? 0)} failed`);
  $('jobs-failed').classList.toggle('bad', (j.failed ?? 0) > 0);
  const checks = s.checks ?? [];
  const failing = checks.filter((c) => c.status === 'failing').length;
  const pending = checks.filter((c) => c.status === 'pending').length;
  setText($('checks-passing'), `${checks.filter((c) => c.status === 'passing').length}/${checks.length}`);
  setText($('checks-failing'), failing ? `${failing} failing` : pending ? `${pending} pending` : checks.length ? 'all passing' : 'no checks');
  $('checks-failing').classList.toggle('bad', failing > 0);
  const errors = s.errors ?? [];
  setText($('error-count'), formatNumber(errors.length));
  const newest = errors[0];
  setText($('error-sub'), newest ? `newest ${ago(newest.ts, s.time)}` : 'none');
  for (const st of NODE_STATUSES) setText($(`count-${st}`), n.by_status?.[st] ?? 0);
}

function renderNodes(s) {
  const grid = $('node-list');
  const list = s.nodes.list;
  const seen = new Set();
  let prev = null;
  for (const n of list) {
    seen.add(n.id);
    let t = nodeTiles.get(n.id);
    if (!t) {
      t = {
        root: el('div', { class: 'node', 'data-testid': 'node', 'data-node-id': n.id }),
        id: el('span', { class: 'node-id' }),
        status: el('span', { class: 'node-status', 'data-testid': 'node-status' }),
        meta: el('div', { class: 'node-meta' }),
        job: el('div', { class: 'node-job' }),
        hb: el('div', { class: 'node-meta' }),
      };
      const swatch = el('span', { class: 'node-swatch', style: `background:${nodeColor(n.id)}` });
      t.root.append(el('div', { class: 'node-top' }, el('span', { class: 'node-id-wrap' }, swatch, t.id), t.status), t.meta, t.job, t.hb);
      nodeTiles.set(n.id, t);
    }
    const status = n.status ?? 'initializing';
    t.root.className = `node s-${status}`;
    t.root.dataset.status = status;
    setText(t.id, n.id);
    setText(t.status, status);
    const meta = [n.role, n.host, n.version && `v${n.version}`].filter(Boolean).join(' · ');
    setText(t.meta, meta || '\u00a0');
    const job = n.job !== null && n.job !== undefined ? `job ${n.job}` : n.msg ? '' : 'no job';
    setText(t.job, [job, n.msg].filter(Boolean).join(' — ') || '\u00a0');
    const hbText = typeof n.heartbeat === 'number' ? `heartbeat ${ago(n.heartbeat, s.time)}` : 'no heartbeat';
    setText(t.hb, status === 'dead' && n.reported_status ? `${hbText} (said ${n.reported_status})` : hbText);
    // Keep DOM order = list order without re-inserting tiles that are already in place.
    const want = prev ? prev.nextSibling : grid.firstChild;
    if (want !== t.root) grid.insertBefore(t.root, want);
    prev = t.root;
  }
  for (const [id, t] of nodeTiles) {
    if (!seen.has(id)) {
      t.root.remove();
      nodeTiles.delete(id);
    }
  }
  if (!list.length && !grid.querySelector('.empty-note')) grid.append(el('div', { class: 'empty-note', text: 'No nodes yet: nothing has written under nodes.' }));
  if (list.length) grid.querySelector('.empty-note')?.remove();
}

function renderQueue(s) {
  const j = s.jobs;
  const q = s.queue ?? {};
  const total = j.count ?? 0;
  setText($('jobs-total'), `(${formatNumber(total)} kept in the state)`);
  // All jobs by status.
  const bar = $('jobs-bar');
  const parts = [['done', j.done], ['failed', j.failed], ['running', j.running], ['queued', j.queued]];
  if (bar.childElementCount !== parts.length) {
    bar.replaceChildren(...parts.map(([k]) => el('div', { class: k, 'data-testid': `jobs-bar-${k}` })));
  }
  parts.forEach(([k, v], i) => {
    const d = bar.children[i];
    const n = v ?? 0;
    d.style.flexGrow = String(n);
    d.style.display = n ? '' : 'none';
    d.title = `${formatNumber(n)} ${k}`;
    const pct = total ? n / total : 0;
    setText(d, pct > 0.12 ? `${formatNumber(n)} ${k}` : pct > 0.04 ? formatNumber(n) : '');
  });
  // Sections of the unfinished id space.
  const sec = $('queue-sections');
  const sections = q.sections ?? [];
  setText($('queue-range'), q.from !== null && q.from !== undefined ? `ids ${q.from}–${q.to}` : 'no unfinished jobs');
  setText($('queue-from'), q.from ?? '');
  setText($('queue-to'), q.to ?? '');
  const key = sections.map((x) => `${x.node}:${x.from}-${x.to}`).join('|');
  const children = [];
  if (!sections.length) {
    children.push(el('div', { class: 'empty', style: 'flex-grow:1', text: q.from === null || q.from === undefined ? 'nothing queued' : 'no live node' }));
  }
  for (const x of sections) {
    const width = Math.max(1, x.to - x.from + 1);
    const label = `${x.node} · ${x.from}–${x.to}`;
    children.push(el('div', {
      style: `flex-grow:${width};background:${nodeColor(x.node)}`,
      title: `${x.node}: ids ${x.from}–${x.to}, ${x.queued} queued, ${x.running} running`,
      'data-testid': 'queue-section', 'data-node-id': x.node,
    }, width >= (q.to - q.from + 1) * 0.22 ? label : width >= (q.to - q.from + 1) * 0.1 ? x.node : width >= (q.to - q.from + 1) * 0.04 ? x.node.replace(/^[^0-9]*/, '') : ''));
  }
  if (sec.dataset.key !== key) {
    sec.dataset.key = key;
    sec.replaceChildren(...children);
  }
  // Current jobs with progress bars, keyed by job id so a bar grows smoothly between updates.
  const cur = $('current-jobs');
  const current = j.current ?? [];
  const deadNodes = new Set(s.nodes.list.filter((n) => n.status === 'dead').map((n) => n.id));
  const seen = new Set();
  let prev = null;
  for (const c of current) {
    seen.add(c.id);
    let r = jobRows.get(c.id);
    if (!r) {
      r = { row: el('div', { class: 'job-row', 'data-testid': 'current-job', 'data-job-id': c.id }), node: el('span', { class: 'job-node' }), bar: el('div'), pct: el('span', { class: 'job-pct' }) };
      r.row.append(el('span', { class: 'job-id', text: `#${c.id}` }), r.node, el('div', { class: 'progress' }, r.bar), r.pct);
      jobRows.set(c.id, r);
    }
    const pct = typeof c.progress === 'number' ? Math.round(c.progress * 100) : null;
    const stale = deadNodes.has(c.node);
    r.row.classList.toggle('stale', stale);
    r.row.title = stale ? `${c.node} is dead: this job waits to be taken over` : `started ${ago(c.started, s.time)}`;
    setText(r.node, c.node ?? '—');
    r.bar.style.width = `${pct ?? 0}%`;
    setText(r.pct, pct === null ? '—' : `${pct}%`);
    const want = prev ? prev.nextSibling : cur.firstChild;
    if (want !== r.row) cur.insertBefore(r.row, want);
    prev = r.row;
  }
  for (const [id, r] of jobRows) {
    if (!seen.has(id)) {
      r.row.remove();
      jobRows.delete(id);
    }
  }
  const note = cur.querySelector('.empty-note');
  if (!current.length && !note) cur.append(el('div', { class: 'empty-note', text: 'No job is running.' }));
  if (current.length && note) note.remove();
}

function renderCounters(s) {
  const tbody = $('counters').tBodies[0];
  const filter = $('counter-filter').value.trim().toLowerCase();
  const counters = (s.counters ?? []).filter((c) => !filter || c.path.toLowerCase().includes(filter));
  const seen = new Set();
  let prev = null;
  for (const c of counters) {
    seen.add(c.path);
    let r = counterRows.get(c.path);
    if (!r) {
      r = { tr: el('tr', { 'data-testid': 'counter', 'data-path': c.path }), value: el('td', { class: 'num' }), rate: el('td', { class: 'num' }), spark: svgEl('spark') };
      r.tr.append(el('td', { title: c.path }, pathSpans(c.path)), r.value, r.rate, el('td', {}, r.spark));
      counterRows.set(c.path, r);
    }
    setText(r.value, formatNumber(c.value));
    setText(r.rate, formatRate(c.rate));
    const h = model.counterHistory.get(c.path) ?? [];
    sparkline(r.spark, h.map((x, i) => (typeof x.rate === 'number' ? x.rate : i ? rateBetween(h[i - 1], x) : null)));
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== r.tr) tbody.insertBefore(r.tr, want);
    prev = r.tr;
  }
  for (const [path, r] of counterRows) {
    if (!seen.has(path)) {
      r.tr.remove();
      counterRows.delete(path);
    }
  }
}

function rateBetween(a, b) {
  const dt = (b.t - a.t) / 1000;
  return dt > 0 && typeof a.value === 'number' && typeof b.value === 'number' ? (b.value - a.value) / dt : null;
}

function renderChecks(s) {
  const box = $('checks');
  const checks = s.checks ?? [];
  const order = { failing: 0, pending: 1, passing: 2 };
  const sorted = [...checks].sort((a, b) => (order[a.status] ?? 3) - (order[b.status] ?? 3) || (a.id < b.id ? -1 : 1));
  const items = sorted.map((c) => {
    const status = c.status ?? 'pending';
    const ev = c.evidence;
    return el('div', { class: `item s-${status}`, 'data-testid': 'check', 'data-check-id': c.id, 'data-status': status },
      el('div', { class: 'item-head' }, el('span', { class: 'badge', text: status }), el('span', { class: 'item-title', text: c.id }),
        el('span', { class: 'item-time', text: typeof c.since === 'number' ? `since ${ago(c.since, s.time).replace(' ago', '')}` : '' })),
      ev !== null && ev !== undefined ? el('div', { class: 'evidence', text: compactJson(ev, 600) }) : null);
  });
  if (!items.length) items.push(el('div', { class: 'empty-note', text: 'No checks: nothing has written under checks.' }));
  box.replaceChildren(...items);
}

function renderErrors(s) {
  const box = $('errors');
  const errors = s.errors ?? [];
  const items = errors.map((e) => el('div', { class: `item level-${e.level ?? 'error'}`, 'data-testid': 'error-item' },
    el('div', { class: 'item-head' }, el('span', { class: 'badge', text: e.level ?? 'error' }), el('span', { class: 'item-title', text: e.blade }),
      el('span', { class: 'item-time', title: typeof e.ts === 'number' ? new Date(e.ts).toISOString() : '', text: ago(e.ts, s.time) })),
    el('div', { class: 'item-body', text: e.msg ?? compactJson(e) }),
    e.details !== null && e.details !== undefined ? el('div', { class: 'evidence', text: compactJson(e.details, 300) }) : null));
  if (!items.length) items.push(el('div', { class: 'empty-note', text: 'No errors under errors.' }));
  box.replaceChildren(...items);
}

function renderStatusEvents() {
  const box = $('status-events');
  const items = model.statusEvents.map((e) => el('div', { class: 'event', 'data-testid': 'status-event' },
    el('span', {}, el('b', { text: e.workerNodeId }), ' ', el('span', { class: 'arrow', text: `${e.oldStatus ?? 'new'} → ` }),
      el('span', { class: `node-status s-${e.newStatus ?? 'dead'}`, style: 'color:var(--c)', text: e.newStatus ?? 'gone' })),
    el('span', { class: 'muted', text: clock(e.updatedAt) })));
  if (!items.length) items.push(el('div', { class: 'empty-note', text: 'No status change since the page connected.' }));
  box.replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------------
// Controls and readouts.

let connState = { name: 'connecting' };

function renderMode() {
  const mode = connection.mode;
  for (const b of document.querySelectorAll('[data-mode]')) b.setAttribute('aria-pressed', String(b.dataset.mode === mode));
  const input = $('interval-input');
  input.disabled = mode !== 'periodic';
  input.closest('.interval').classList.toggle('disabled', mode !== 'periodic');
  $('refresh-button').disabled = mode === 'live' || connState.name !== 'open';
  document.body.dataset.mode = mode;
}

function renderReadouts() {
  const lat = $('latency');
  if (connection.mode === 'live') {
    const m = model.latencyMs;
    setText(lat, m === null ? 'waiting…' : formatDuration(m));
    lat.dataset.ms = m === null ? '' : String(Math.round(m));
    lat.parentElement.title = 'Live: median time from a change\'s event time to its arrival here, over the last 5 s';
    setText(lat.previousElementSibling, 'latency');
  } else {
    // Outside live mode: how old the newest event is (event time vs now).
    const t = model.summary?.time;
    setText(lat, typeof t === 'number' && model.summary?.clock !== 'wall' ? formatDuration(Math.max(0, Date.now() - t)) : '—');
    lat.dataset.ms = '';
    lat.parentElement.title = 'Periodic/manual: age of the newest event in the view (event time vs now)';
    setText(lat.previousElementSibling, 'data age');
  }
  setText($('last-update'), model.lastUpdateAt ? clock(model.lastUpdateAt) : '—');
  $('last-update').dataset.at = model.lastUpdateAt ? String(model.lastUpdateAt) : '';
}

function renderConnection(st) {
  connState = st;
  const box = $('connection-status');
  box.dataset.state = st.name;
  let text;
  if (st.name === 'open') text = 'connected';
  else if (st.name === 'connecting') text = 'connecting…';
  else if (st.name === 'closed') text = 'disconnected';
  else text = st.retryAt ? `reconnecting in ${formatDuration(Math.max(0, st.retryAt - Date.now()))}` : `reconnecting (try ${st.attempt})…`;
  setText($('connection-text'), text);
  box.title = st.why ? `last close: ${st.why}` : '';
  renderMode();
}

function renderError() {
  const b = $('error-banner');
  const e = model.lastError;
  if (!e) {
    b.hidden = true;
    return;
  }
  b.hidden = false;
  setText(b, `Observer said: ${e.reason} — ${e.message ?? ''}`);
  clearTimeout(renderError.timer);
  renderError.timer = setTimeout(() => {
    b.hidden = true;
  }, 8000);
}

const connection = new ObserverConnection({
  url: streamUrl(),
  model,
  onUpdate: render,
  onState: (st) => {
    renderConnection(st);
    if (st.name === 'open' && explorerLoadedOnce) explorer.load();
  },
});

const explorer = new StateExplorer({
  tree: $('explorer-tree'), detail: $('explorer-detail'), search: $('explorer-search'), info: $('explorer-info'), reload: $('explorer-reload'), fetchJson,
});
let explorerLoadedOnce = false;

// Mode switch, interval, refresh. The choice survives reloads (localStorage) and reconnects.
const saved = (() => {
  try {
    return JSON.parse(localStorage.getItem('lattice.observer.mode') ?? 'null');
  } catch {
    return null;
  }
})();
const urlMode = params.get('mode');
const urlInterval = Number(params.get('interval_ms'));
connection.mode = ['periodic', 'manual', 'live'].includes(urlMode) ? urlMode : saved?.mode ?? 'periodic';
connection.intervalMs = Number.isInteger(urlInterval) && urlInterval >= MIN_INTERVAL_MS && urlInterval <= MAX_INTERVAL_MS ? urlInterval : saved?.intervalMs ?? 1000;
$('interval-input').value = String(connection.intervalMs / 1000);

function choose(mode) {
  let ms = connection.intervalMs;
  const input = $('interval-input');
  const v = Math.round(Number(input.value) * 1000);
  if (Number.isFinite(v)) ms = Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, v));
  input.value = String(ms / 1000);
  connection.setMode(mode, ms);
  try {
    localStorage.setItem('lattice.observer.mode', JSON.stringify({ mode, intervalMs: ms }));
  } catch {
    // private mode: the choice lasts for this page only
  }
  renderMode();
  renderReadouts();
}

for (const b of document.querySelectorAll('[data-mode]')) b.addEventListener('click', () => choose(b.dataset.mode));
$('interval-input').addEventListener('change', () => choose('periodic'));
$('refresh-button').addEventListener('click', () => {
  const btn = $('refresh-button');
  if (connection.refresh()) {
    btn.classList.remove('spinning');
    void btn.offsetWidth; // restart the animation
    btn.classList.add('spinning');
  }
});
$('counter-filter').addEventListener('input', () => model.summary && renderCounters(model.summary));

// Clock-driven readouts (latency age, reconnect countdown) tick even without messages.
setInterval(() => {
  renderReadouts();
  if (connState.name === 'reconnecting') renderConnection(connState);
}, 500);
setInterval(() => {
  if (!document.hidden && connState.name === 'open') explorer.load();
}, 15000);

renderMode();
renderStatusEvents();
connection.start();
explorer.load().then(() => {
  explorerLoadedOnce = true;
});

// For the browser tests and the curious: the live objects.
window.lattice = { model, connection, explorer };
