// Browser tests of the observer page (ctest label `browser`): Debian's chromium (headless, empty
// profile) against a real observer fed by a real aggregator on the dev broker, shards sent with
// `lattice emit`. Screenshots go to build/test-artifacts/browser/ (LATTICE_ARTIFACTS).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Pipeline, artifactPath, launchBrowser, sleep, waitFor } from './harness.mjs';

const pipeline = new Pipeline();
let browser;
let page;

const node = (id) => page.locator(`[data-testid="node"][data-node-id="${id}"]`);
const statusOf = (id) => node(id).getAttribute('data-status');

// Waits until node `id` shows `status` on the page; returns the ms it took from `since`.
async function seen(id, status, since, ms = 15000) {
  await waitFor(`${id} to show ${status}`, async () => (await statusOf(id).catch(() => null)) === status, ms, 20);
  return Date.now() - since;
}

async function shot(name) {
  await page.screenshot({ path: artifactPath(`${name}.png`) });
}

before(async () => {
  const t0 = Date.now();
  const mark = (what) => console.log(`setup: ${what} at ${Date.now() - t0} ms`);
  const browserStarting = launchBrowser(); // starts in parallel with the pipeline
  browserStarting.catch(() => {}); // awaited below
  await pipeline.start();
  mark('broker up');
  // Three workers and a few jobs; the observer opens the state once the aggregator made it.
  await pipeline.emit('w1', { nodes: { w1: { status: 'working', role: 'worker', host: 'blade-1', job: '1' } }, jobs: { 1: { status: 'running', node: 'w1', progress: 0.4 } } });
  await pipeline.emit('w2', { nodes: { w2: { status: 'waiting', role: 'worker', host: 'blade-2' } } });
  await pipeline.emit('w3', { nodes: { w3: { status: 'paused', role: 'worker', host: 'blade-3' } } });
  // w4 last showed life a minute ago: the observer derives `dead` (w1-w3 have no heartbeat, so
  // they are never dead).
  await pipeline.emit('w4', { nodes: { w4: { status: 'working', role: 'worker', heartbeat: { $max: Date.now() - 60000 } } } });
  await pipeline.emit('orchestrator', { jobs: { 2: { status: 'queued' }, 3: { status: 'queued' }, 4: { status: 'queued' }, 5: { status: 'queued' } } });
  await pipeline.emit('scraper-1', { scrape: { 'a.example': { tries: { $inc: 5 }, item_collected: { $inc: 3 } } } });
  await pipeline.emit('checker', { checks: { heartbeats: { status: 'passing', since: Date.now(), evidence: { stale: {} } } } });
  await waitFor('the aggregator to write the state', async () => (await import('node:fs')).existsSync(`${pipeline.state}/CURRENT`), 30000);
  mark('shards sent and the state written');
  await pipeline.startObserver();
  mark('observer up');
  await waitFor('the observer to see four nodes', async () => (await pipeline.summary()).nodes.count === 4, 15000);
  mark('observer sees the nodes');
  browser = await browserStarting;
  mark('chromium up');
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.on('pageerror', (e) => console.error('page error:', e.message));
}, { timeout: 90000 });

after(async () => {
  if (process.exitCode) console.error(pipeline.logs());
  await browser?.close();
  await pipeline.stop();
});

test('the page loads and shows the nodes with their statuses', async () => {
  const t0 = Date.now();
  await page.goto(`${pipeline.url}?mode=periodic&interval_ms=1000`);
  console.log(`page loaded in ${Date.now() - t0} ms`);
  await waitFor('connected', async () => (await page.getAttribute('[data-testid="connection-status"]', 'data-state')) === 'open', 10000);
  await waitFor('four node tiles', async () => (await page.locator('[data-testid="node"]').count()) === 4, 10000);
  assert.equal(await page.textContent('[data-testid="node-count"]'), '4');
  assert.equal(await statusOf('w1'), 'working');
  assert.equal(await statusOf('w2'), 'waiting');
  assert.equal(await statusOf('w3'), 'paused');
  assert.equal(await statusOf('w4'), 'dead');
  assert.equal(await page.textContent('[data-testid="count-dead"]'), '1');
  assert.match(await page.textContent('[data-testid="node-live"]'), /3 live · 1 dead/);
  // The dead node has no section of the queue; the three live ones share it.
  assert.deepEqual(await page.locator('[data-testid="queue-section"]').evaluateAll((els) => els.map((e) => e.dataset.nodeId)), ['w1', 'w2', 'w3']);
  assert.equal(await page.textContent('[data-testid="count-working"]'), '1');
  assert.equal(await page.textContent('[data-testid="count-paused"]'), '1');
  assert.equal(await page.textContent('[data-testid="jobs-queued"]'), '4');
  assert.equal(await page.locator('[data-testid="current-job"]').count(), 1);
  assert.equal(await page.locator('[data-testid="counter"]').count(), 2);
  assert.equal(await page.locator('[data-testid="check"][data-status="passing"]').count(), 1);
  await waitFor('the state explorer', async () => (await page.locator('[data-testid="explorer-tree"] summary').count()) >= 3, 10000);
  console.log(`all shown ${Date.now() - t0} ms after navigating`);
  await shot('01-loaded');
});

test('periodic mode: a status change appears within the interval', async () => {
  const interval = 1000;
  await page.fill('[data-testid="interval-input"]', String(interval / 1000));
  await page.click('[data-testid="mode-periodic"]');
  const batchesBefore = await page.evaluate(() => window.lattice.model.batches);
  await pipeline.emit('w2', { nodes: { w2: { status: 'working', job: '2' } }, jobs: { 2: { status: 'running', node: 'w2', progress: 0.1 } } });
  const sent = Date.now();
  const took = await seen('w2', 'working', sent, 10000);
  console.log(`periodic (${interval} ms): the change showed ${took} ms after lattice emit returned`);
  // At most one interval plus the pipeline's own delay (delivery, aggregator batch, observer
  // catch-up: tens of ms when idle; the allowance covers a loaded 2-core test machine).
  assert.ok(took <= interval + 1000, `took ${took} ms with a ${interval} ms interval`);
  assert.ok((await page.evaluate(() => window.lattice.model.batches)) > batchesBefore, 'it came in a batched_update_response');
  assert.equal(await page.getAttribute('[data-testid="mode-periodic"]', 'aria-pressed'), 'true');
  await shot('02-periodic');
});

test('manual mode: nothing moves until the refresh button is pressed', async () => {
  await page.click('[data-testid="mode-manual"]');
  assert.equal(await page.isDisabled('[data-testid="interval-input"]'), true);
  await pipeline.emit('w3', { nodes: { w3: { status: 'waiting' } } });
  await sleep(2000); // more than the aggregator and the observer need, and twice the old interval
  assert.equal(await statusOf('w3'), 'paused', 'manual mode must not update by itself');
  const clicked = Date.now();
  await page.click('[data-testid="refresh-button"]');
  const took = await seen('w3', 'waiting', clicked, 3000);
  console.log(`manual: the refresh showed the change in ${took} ms`);
  await shot('03-manual-refreshed');
});

test('live mode: a status change appears within a second and the latency is shown', async () => {
  await page.click('[data-testid="mode-live"]');
  await waitFor('live mode', async () => (await page.evaluate(() => window.lattice.model.mode)) === 'live', 5000);
  assert.equal(await page.isDisabled('[data-testid="refresh-button"]'), true, 'no refresh button in live mode');
  await pipeline.emit('w1', { nodes: { w1: { status: 'waiting', job: null } }, jobs: { 1: { status: 'done', progress: 1 } } });
  const sent = Date.now();
  const took = await seen('w1', 'waiting', sent, 5000);
  console.log(`live: the change showed ${took} ms after lattice emit returned`);
  assert.ok(took <= 1000, `live update took ${took} ms`);
  const ms = await waitFor('a latency number', async () => {
    const v = await page.getAttribute('[data-testid="latency"]', 'data-ms');
    return v !== null && v !== '' ? Number(v) : null;
  }, 5000);
  assert.ok(Number.isFinite(ms) && ms >= 0 && ms < 5000, `latency ${ms}`);
  assert.match(await page.textContent('[data-testid="latency"]'), /\d+(\.\d+)? (ms|s)/);
  console.log(`live: latency readout ${await page.textContent('[data-testid="latency"]')}`);
  await shot('04-live');
});

test('the page reconnects after the observer restarts', async () => {
  await pipeline.stopObserver();
  await waitFor('the page to notice', async () => {
    const st = await page.getAttribute('[data-testid="connection-status"]', 'data-state');
    return st === 'reconnecting' || st === 'connecting';
  }, 10000);
  await shot('05-observer-down');
  // A change while the observer is down shows once the page is back (the connect snapshot).
  await pipeline.emit('w2', { nodes: { w2: { status: 'paused' } } });
  await sleep(500);
  await pipeline.startObserver();
  const restarted = Date.now();
  await waitFor('reconnected', async () => (await page.getAttribute('[data-testid="connection-status"]', 'data-state')) === 'open', 15000);
  console.log(`reconnect: connected again ${Date.now() - restarted} ms after the observer was back`);
  await seen('w2', 'paused', restarted, 5000);
  // The mode the user chose survives the reconnect.
  await waitFor('live mode again', async () => (await page.evaluate(() => window.lattice.model.mode)) === 'live', 5000);
  await pipeline.emit('w3', { nodes: { w3: { status: 'working' } } });
  await seen('w3', 'working', Date.now(), 2000);
  await shot('06-reconnected');
});

test('screenshots in both themes at both laptop sizes', async () => {
  for (const [scheme, w, h] of [['light', 1366, 768], ['dark', 1920, 1080]]) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.setViewportSize({ width: w, height: h });
    await sleep(300);
    await shot(`07-${scheme}-${w}x${h}`);
  }
  // No horizontal scrollbar at the laptop size: the layout fits.
  await page.setViewportSize({ width: 1366, height: 768 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 1366 px screen`);
});
