// Unit tests of observer/web/js/connection.js with a scripted WebSocket: the user's mode is
// restored on every (re)connect, periodic requests never pile up behind an unanswered one, the
// refresh button is refused in live mode, and a lost connection is retried with growing delays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ObserverConnection } from '../../observer/web/js/connection.js';
import { ObserverModel } from '../../observer/web/js/protocol.js';

const here = dirname(fileURLToPath(import.meta.url));
const goldenDir = process.env.LATTICE_GOLDEN_DIR ?? join(here, '..', 'data', 'observer', 'golden');
const golden = (name) => readFileSync(join(goldenDir, name), 'utf8');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  // Test side.
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(text) {
    this.onmessage?.({ data: text });
  }
  drop() {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: '' });
  }
  types() {
    return this.sent.map((m) => m.type + (m.payload.update_type ? `:${m.payload.update_type}` : m.payload.mode ? `:${m.payload.mode}` : ''));
  }
}

function connect(opts = {}) {
  FakeSocket.all = [];
  const states = [];
  const updates = [];
  const model = new ObserverModel();
  const c = new ObserverConnection({ url: 'ws://x/v1/stream', model, WebSocketImpl: FakeSocket, onState: (s) => states.push(s), onUpdate: (w) => updates.push(w), ...opts });
  return { c, model, states, updates };
}

test('the chosen mode is sent on connect, and periodic requests wait for their answer', async () => {
  const { c, updates } = connect();
  c.mode = 'periodic';
  c.intervalMs = 100;
  c.start();
  const ws = FakeSocket.all[0];
  ws.open();
  assert.deepEqual(ws.sent[0], { type: 'set_mode', payload: { mode: 'periodic', interval_ms: 100 } });
  ws.receive(golden('hello.json'));
  ws.receive(golden('snapshot.json'));
  await sleep(350);
  // No answer yet: exactly one periodic request went out, not three.
  assert.deepEqual(ws.types().filter((t) => t === 'update_request:periodic').length, 1);
  ws.receive(golden('batched_update_response.json'));
  await sleep(150);
  assert.equal(ws.types().filter((t) => t === 'update_request:periodic').length, 2);
  assert.ok(updates.some((w) => w.summary));
  c.stop();
});

test('manual mode sends nothing by itself; refresh sends a manual request; live refuses it', async () => {
  const { c } = connect();
  c.start();
  const ws = FakeSocket.all[0];
  ws.open();
  c.setMode('manual');
  await sleep(1200);
  assert.ok(!ws.types().some((t) => t.startsWith('update_request')), ws.types().join());
  assert.equal(c.refresh(), true);
  assert.equal(ws.types().at(-1), 'update_request:manual');
  c.setMode('live');
  assert.equal(ws.types().at(-1), 'set_mode:live');
  assert.equal(c.refresh(), false);
  assert.equal(ws.types().at(-1), 'set_mode:live');
  c.stop();
});

test('a dropped connection is retried with growing delays and the mode is restored', async () => {
  const { c, states } = connect();
  c.mode = 'live';
  c.start();
  FakeSocket.all[0].open();
  FakeSocket.all[0].drop();
  assert.equal(c.state.name, 'reconnecting');
  const first = c.state.retryAt - Date.now();
  assert.ok(first >= 150 && first <= 300, `first retry in ${first} ms`);
  await sleep(first + 50);
  assert.equal(FakeSocket.all.length, 2, 'reconnected once');
  FakeSocket.all[1].drop(); // fails again before opening: the next delay is longer
  const second = c.state.retryAt - Date.now();
  assert.ok(second > first, `second delay ${second} <= first ${first}`);
  await sleep(second + 50);
  const ws = FakeSocket.all[2];
  ws.open();
  assert.equal(c.state.name, 'open');
  assert.equal(c.attempt, 0, 'a successful open resets the backoff');
  assert.deepEqual(ws.sent[0], { type: 'set_mode', payload: { mode: 'live' } });
  assert.deepEqual(states.map((s) => s.name).filter((n, i, a) => n !== a[i - 1]), ['connecting', 'open', 'reconnecting', 'open']);
  c.stop();
  assert.equal(c.state.name, 'closed');
  await sleep(400);
  assert.equal(FakeSocket.all.length, 3, 'no reconnect after stop()');
});

test('a server frame that breaks the protocol is reported, not thrown', () => {
  const { c, model, updates } = connect();
  c.start();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive('{"type":');
  assert.equal(model.lastError.reason, 'bad_server_message');
  assert.ok(updates.at(-1).error);
  c.stop();
});
