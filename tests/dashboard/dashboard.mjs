// The dashboard in a real browser: Debian's chromium driven by playwright-core.
//
//   RASK_BIN=target/debug/rask PLAYWRIGHT_CORE=.tools/playwright-core-X/node_modules/playwright-core \
//     node tests/dashboard/dashboard.mjs [--docs]
//
// (scripts/test runs it in its "dashboard" phase, with both set.) It starts `rask scheduler` and
// two `rask worker`s (no nanny, so a killed worker stays gone), opens /status, runs
// `rask run array-mean` against the scheduler, and checks that: the workers table shows the 2
// workers; the task stream gets bars for both; memory figures move; a worker killed mid-run leaves
// the table while the job still completes; both workers report CPU use; the cluster charts follow
// the workers and tasks, and chart the scheduler's own CPU and memory; the graph panel draws the
// job's task graph and every node ends in memory or released; the task stream draws input
// transfers; every task prefix's progress reaches 100%; the page says so when the scheduler goes away and goes live again when
// it is back; and nothing is logged to the console as an error while the scheduler is up. Screenshots of each panel go to
// $RASK_ARTIFACTS (default: target/test-artifacts/dashboard), and with --docs also to
// docs/images/ for docs/dashboard.md.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RASK_BIN = process.env.RASK_BIN || path.join(ROOT, 'target/debug/rask');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.RASK_ARTIFACTS || path.join(ROOT, 'target/test-artifacts/dashboard');
const DOCS = process.argv.includes('--docs');
// The array job: big enough to be watched for a few seconds in a debug build.
const SIZE = process.env.RASK_DASHBOARD_SIZE || '560';
const CHUNK = process.env.RASK_DASHBOARD_CHUNK || '70';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const T0 = Date.now();
const children = [];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'rask-dashboard-'));

function log(msg) {
  console.log(`[${((Date.now() - T0) / 1000).toFixed(1)} s] ${msg}`);
}

function fail(msg) {
  throw new Error(msg);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts a rask process, its output in a log file of its own (kept as an artifact). */
function start(name, args) {
  const out = fs.openSync(path.join(ARTIFACTS, `${name}.log`), 'a');
  const child = spawn(RASK_BIN, args, { stdio: ['ignore', out, out], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.label = name;
  children.push(child);
  return child;
}

async function until(what, fn, timeoutMs = 30000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function healthy(url) {
  try {
    const r = await fetch(`${url}/health`);
    return r.ok && (await r.text()) === 'ok';
  } catch {
    return false;
  }
}

async function shot(page, panel, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.locator(panel).screenshot({ path: file });
  if (DOCS) fs.copyFileSync(file, path.join(ROOT, 'docs/images', `${name}.png`));
  log(`screenshot ${path.relative(ROOT, file)}`);
}

const workerRows = (page) => page.$$eval('#workers tbody tr', (rows) => rows.map((r) => ({
  name: r.dataset.worker, managed: Number(r.dataset.managed), rss: Number(r.dataset.rss),
})));
const progressRows = (page) => page.$$eval('#progress .prefix', (rows) => rows.map((r) => ({
  prefix: r.dataset.prefix, done: Number(r.dataset.done), total: Number(r.dataset.total), erred: Number(r.dataset.erred),
})));

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) fs.rmSync(path.join(ARTIFACTS, f));
  const [port, httpPort] = [await freePort(), await freePort()];
  const scheduler = `tcp://127.0.0.1:${port}`;
  const base = `http://127.0.0.1:${httpPort}`;
  const schedulerArgs = ['scheduler', '--host', '127.0.0.1', '--port', String(port), '--dashboard-address', `127.0.0.1:${httpPort}`];
  let sched = start('scheduler', schedulerArgs);
  await until('the scheduler to answer /health', () => healthy(base));
  const workerArgs = (name) => ['worker', scheduler, '--name', name, '--nthreads', '2', '--memory-limit', '1GiB', '--no-nanny', '--local-directory', work];
  const workers = { w1: start('w1', workerArgs('w1')), w2: start('w2', workerArgs('w2')) };
  log(`scheduler ${scheduler}, dashboard ${base}`);

  const browser = await chromium.launch({ executablePath: CHROMIUM });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const consoleErrors = [];
    let watchConsole = true;
    page.on('console', (m) => {
      if (m.type() === 'error' && watchConsole) consoleErrors.push(`${m.text()} (${m.location().url})`);
    });
    page.on('pageerror', (e) => consoleErrors.push(`uncaught: ${e.message}`));

    // `/` is Dask's redirect to /status.
    await page.goto(`${base}/`);
    if (!page.url().endsWith('/status')) fail(`/ led to ${page.url()}, not /status`);
    await until('the page to go live', async () => (await page.getAttribute('#connection', 'data-state')) === 'live');

    await until('2 workers in the table', async () => (await workerRows(page)).length === 2);
    const names = (await workerRows(page)).map((r) => r.name).sort().join(',');
    if (names !== 'w1,w2') fail(`workers table shows ${names}`);
    const before = await workerRows(page);
    log('workers table shows w1 and w2');
    const cluster = await until('the cluster chart at 2 workers with an adaptive target', async () => {
      const c = await page.evaluate(() => window.raskDashboard.cluster());
      return c && c.workers === 2 && c.threads === 4 && Number.isInteger(c.target) && c;
    });
    log(`cluster: ${JSON.stringify(cluster)}`);

    const job = start('job', ['run', 'array-mean', '--scheduler', scheduler, '--size', SIZE, '--chunk', CHUNK]);
    const jobStart = Date.now();
    await until('task-stream bars for both workers', async () => {
      const bars = await page.evaluate(() => window.raskDashboard.barsByWorker());
      return bars.w1 > 0 && bars.w2 > 0 && bars;
    }).then((bars) => log(`task stream bars: ${JSON.stringify(bars)}`));
    await until('progress bars for the array prefixes', async () => (await progressRows(page)).length > 0);
    await until('memory figures to move', async () => {
      const now = await workerRows(page);
      return now.some((w) => {
        const b = before.find((x) => x.name === w.name);
        return b && (b.managed !== w.managed || b.rss !== w.rss);
      });
    });
    log(`memory moved: ${JSON.stringify(before)} -> ${JSON.stringify(await workerRows(page))}`);
    await until('a CPU figure for both workers', async () => {
      const cpu = await page.$$eval('#workers tbody tr', (rows) => rows.map((r) => r.dataset.cpu));
      return cpu.length === 2 && cpu.every((c) => c !== '' && Number(c) >= 0) && cpu;
    }).then((cpu) => log(`CPU: ${cpu.join('%, ')}%`));
    const graph = await until('the graph panel to draw the job\'s graph', async () => {
      const g = await page.evaluate(() => window.raskDashboard.graph());
      return g.nodes > 0 && g.edges > 0 && g.layers > 1 && g.tooLarge === null && (g.processing > 0 || g.waiting > 0) && g;
    });
    log(`graph: ${JSON.stringify(graph)}`);
    if (!(await page.isVisible('#graph')) || (await page.isVisible('#graph-message'))) fail('the graph canvas is not shown');
    await shot(page, '#panel-workers', 'dashboard-workers');
    await shot(page, '#panel-progress', 'dashboard-progress');
    await shot(page, '#panel-graph', 'dashboard-graph');

    // A worker killed mid-run leaves the table; the job still completes on the other.
    const running = job.exitCode;
    if (running !== null) fail(`the job finished (exit ${running}) before a worker could be killed mid-run: raise RASK_DASHBOARD_SIZE`);
    workers.w2.kill('SIGKILL');
    log('killed w2');
    await until('w2 to leave the table', async () => {
      const rows = await workerRows(page);
      return rows.length === 1 && rows[0].name === 'w1';
    });
    log('w2 left the workers table');

    const { code } = await job.exited;
    log(`array-mean finished in ${((Date.now() - jobStart) / 1000).toFixed(1)} s, exit ${code}`);
    // It exits non-zero when its mean is implausible.
    if (code !== 0) fail(`rask run array-mean exited ${code}; see ${ARTIFACTS}/job.log`);
    const final = await until('every prefix at 100%', async () => {
      const rows = await progressRows(page);
      return rows.length > 0 && rows.every((r) => r.total > 0 && r.done === r.total && r.erred === 0) && rows;
    });
    log(`progress: ${final.map((r) => `${r.prefix} ${r.done}/${r.total}`).join(', ')}`);
    await page.waitForTimeout(700);
    await shot(page, '#panel-stream', 'dashboard-task-stream');
    await shot(page, '#panel-progress', 'dashboard-progress-done');
    const after = await page.evaluate(() => window.raskDashboard.cluster());
    if (after.workers !== 1 || after.memory !== 0) fail(`cluster after the run: ${JSON.stringify(after)}`);
    if (!(after.schedRss > 1 << 20) || !(after.schedCpu >= 0)) fail(`no scheduler CPU and memory in the cluster panel: ${JSON.stringify(after)}`);
    const legend = await page.$$eval('#panel-cluster [data-series^="sched"]', (ks) => ks.map((k) => `${k.dataset.series}=${k.dataset.value}`));
    if (legend.length !== 2 || legend.some((k) => k.endsWith('='))) fail(`scheduler chart legends: ${legend}`);
    log(`scheduler: ${after.schedCpu.toFixed(1)}% CPU, ${(after.schedRss / 2 ** 20).toFixed(1)} MiB RSS`);
    // Every node of the graph ends in memory or released (the client let go of the result).
    const done = await until('every graph node in memory or released', async () => {
      const g = await page.evaluate(() => window.raskDashboard.graph());
      return g.nodes > 0 && g.waiting === 0 && g.processing === 0 && g.erred === 0 && g.released > 0 && g.memory + g.released === g.nodes && g;
    });
    log(`graph at the end: ${JSON.stringify(done)}`);
    await shot(page, '#panel-graph', 'dashboard-graph-done');
    // The reductions fetched inputs from the other worker: red bars before theirs.
    const transfers = await page.evaluate(() => window.raskDashboard.transfers());
    if (!(transfers > 0)) fail('no input transfer drawn in the task stream');
    log(`task stream: ${transfers} tasks with an input transfer`);
    log(`update sizes: ${JSON.stringify(await page.evaluate(() => window.raskDashboard.bytes()))}`);
    await shot(page, '#panel-cluster', 'dashboard-cluster');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-page.png'), fullPage: true });
    if (DOCS) fs.copyFileSync(path.join(ARTIFACTS, 'dashboard-page.png'), path.join(ROOT, 'docs/images/dashboard-page.png'));

    if (consoleErrors.length) fail(`console errors:\n  ${consoleErrors.join('\n  ')}`);
    log('no console errors');

    // The scheduler goes away: the page says so (the browser logs the refused reconnections as
    // errors from here on), and goes live again when a scheduler is back at the address.
    watchConsole = false;
    sched.kill('SIGTERM');
    await sched.exited;
    await until('the page to say the scheduler is gone', async () => (await page.getAttribute('#connection', 'data-state')) === 'lost', 10000);
    log(`page says: ${await page.textContent('#connection')}`);
    await shot(page, 'header', 'dashboard-scheduler-lost');
    sched = start('scheduler-again', schedulerArgs);
    await until('the page to go live again', async () => (await page.getAttribute('#connection', 'data-state')) === 'live', 15000);
    const pageErrors = consoleErrors.filter((e) => e.startsWith('uncaught'));
    if (pageErrors.length) fail(`script errors:\n  ${pageErrors.join('\n  ')}`);
    log('live again after the scheduler came back');
  } finally {
    await browser.close();
  }
}

function cleanup() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  fs.rmSync(work, { recursive: true, force: true });
}

main()
  .then(() => {
    cleanup();
    log(`PASSED (artifacts in ${path.relative(ROOT, ARTIFACTS) || ARTIFACTS})`);
  })
  .catch((e) => {
    cleanup();
    console.error(`FAILED: ${e.stack || e}\nlogs and screenshots in ${ARTIFACTS}`);
    process.exit(1);
  });
