// Takes the README's screenshot of the observer page with real demo data: runs `lattice demo`,
// waits until worker-4 has died (it stops 20 s into the simulation and is dead 10 s later), and
// captures the page in chromium.
//   node tests/browser/screenshot.mjs [OUT.png] [--at SECONDS] [--dark] [--width W --height H]
// --at counts from the moment the demo prints its URL (the simulation started a few seconds
// before). Defaults: docs/img/observer.png, 30 s, light, 1440x900 full page. LATTICE_BIN picks the
// binary.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { launchBrowser, lattice, repoRoot, sleep, waitFor, webDir } from './harness.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { at: { type: 'string', default: '30' }, dark: { type: 'boolean', default: false }, width: { type: 'string', default: '1440' }, height: { type: 'string', default: '900' }, full: { type: 'boolean', default: true } },
});
const out = positionals[0] ?? join(repoRoot, 'docs', 'img', 'observer.png');
const atMs = Number(values.at) * 1000;

const demo = spawn(lattice, ['demo', '--listen', '127.0.0.1:0', '--seed', '7', '--web', webDir], { stdio: ['ignore', 'pipe', 'inherit'] });
let output = '';
demo.stdout.on('data', (d) => {
  output += d;
  process.stdout.write(d);
});
let browser;
try {
  const url = await waitFor('the demo to print its URL', () => output.match(/observer\s+(http:\/\/\S+)/)?.[1], 60000);
  const started = Date.now();
  browser = await launchBrowser({ colorScheme: values.dark ? 'dark' : 'light', width: Number(values.width), height: Number(values.height) });
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  await page.goto(`${url}?mode=live`);
  await sleep(Math.max(0, atMs - (Date.now() - started)));
  // Let the explorer show a little of the tree.
  await page.evaluate(() => {
    for (const d of document.querySelectorAll('[data-testid="explorer-tree"] details[data-path="nodes"]')) d.open = true;
  });
  await sleep(500);
  mkdirSync(dirname(out), { recursive: true });
  await page.screenshot({ path: out, fullPage: values.full });
  console.log(`screenshot: ${out}`);
} finally {
  await browser?.close();
  demo.kill('SIGINT');
  await new Promise((r) => demo.once('exit', r));
}
