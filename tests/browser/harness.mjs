// The browser tests' harness: a real pipeline on 127.0.0.1 (the dev broker, the aggregator, the
// observer, all `lattice` subcommands started here and stopped at the end), shards sent with
// `lattice emit`, and Debian's chromium driven by playwright-core with an empty profile.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, existsSync, rmSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');
export const webDir = join(repoRoot, 'observer', 'web');
export const lattice = process.env.LATTICE_BIN ?? join(repoRoot, 'build', 'cli', 'lattice');
export const artifacts = process.env.LATTICE_ARTIFACTS ?? join(repoRoot, 'build', 'test-artifacts', 'browser');
export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const run = promisify(execFile);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value or `ms` pass; throws with `what` on timeout. */
export async function waitFor(what, fn, ms = 15000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
}

/** A child process of `lattice` with its output in a log file under the work dir. */
class Child {
  constructor(name, args, dir) {
    this.name = name;
    this.log = join(dir, `${name}.log`);
    const fd = openSync(this.log, 'a');
    this.proc = spawn(lattice, args, { stdio: ['ignore', fd, fd] });
    this.exited = new Promise((res) => this.proc.once('exit', (code, sig) => res(code ?? 128)));
    this.code = null;
    this.exited.then((c) => {
      this.code = c;
    });
  }

  async stop(signal = 'SIGTERM', graceMs = 10000) {
    if (this.code !== null) return this.code;
    this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  tail(n = 20) {
    try {
      return readFileSync(this.log, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '';
    }
  }
}

/** The pipeline: broker + aggregator + observer on free ports in a temp dir. */
export class Pipeline {
  async start() {
    if (!existsSync(lattice)) throw new Error(`no lattice executable at ${lattice} (set LATTICE_BIN)`);
    this.dir = mkdtempSync(join(tmpdir(), 'lattice-browser-'));
    this.state = join(this.dir, 'state');
    const bootstrap = join(this.dir, 'bootstrap');
    this.broker = new Child('broker', ['broker', '--topic', 'lattice.shards:4', '--bootstrap-file', bootstrap, '--no-stdin'], this.dir);
    this.brokers = await waitFor('the broker', () => existsSync(bootstrap) && readFileSync(bootstrap, 'utf8').split('\n')[0].trim(), 15000);
    this.aggregator = new Child('aggregate', ['aggregate', '--brokers', this.brokers, '--state', this.state, '--max-batch-time', '20ms', '--log-interval', '0'], this.dir);
    this.seq = Date.now() * 1000;
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}/`;
    return this;
  }

  /** Sends shards (bodies) of `blade` with event time now, through `lattice emit`. */
  async emit(blade, ...bodies) {
    const ts = Date.now();
    const envelopes = bodies.map((shard) => JSON.stringify({ blade, seq: ++this.seq, ts, shard }));
    await run(lattice, ['emit', '--brokers', this.brokers, '--strict', ...envelopes], { timeout: 30000 });
    return ts;
  }

  async startObserver() {
    this.observer = new Child('observe', ['observe', '--state', this.state, '--listen', `127.0.0.1:${this.port}`, '--web', webDir], this.dir);
    await waitFor('the observer', async () => {
      if (this.observer.code !== null) throw new Error(`observer exited ${this.observer.code}:\n${this.observer.tail()}`);
      const r = await fetch(`${this.url}v1/health`).catch(() => null);
      return r && r.ok;
    }, 30000, 100);
  }

  async stopObserver() {
    return this.observer?.stop();
  }

  /** The observer's /v1/summary. */
  async summary() {
    const r = await fetch(`${this.url}v1/summary`);
    if (!r.ok) throw new Error(`/v1/summary: HTTP ${r.status}`);
    return r.json();
  }

  async stop() {
    for (const c of [this.observer, this.aggregator, this.broker]) {
      if (c) await c.stop();
    }
    if (this.dir && !process.env.LATTICE_KEEP) rmSync(this.dir, { recursive: true, force: true });
  }

  logs() {
    return [this.broker, this.aggregator, this.observer].filter(Boolean).map((c) => `--- ${c.name}.log\n${c.tail(30)}`).join('\n');
  }
}

/**
 * Chromium with an empty temporary profile: playwright's launch() gives every browser a fresh
 * user-data directory of its own and removes it on close (faster to start than a persistent
 * context, and nothing of a previous run is reused).
 */
export async function launchBrowser({ colorScheme = 'light', width = 1366, height = 768 } = {}) {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    throw new Error('playwright-core is not installed: run scripts/setup (npm ci in tests/browser)');
  }
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check'],
  });
  const context = await browser.newContext({ viewport: { width, height }, colorScheme });
  const close = async () => {
    await context.close();
    await browser.close();
  };
  return { context, close };
}

export function artifactPath(name) {
  mkdirSync(artifacts, { recursive: true });
  return join(artifacts, name);
}
