// Loads a pushbench report.html in headless Chromium and checks what a reader would see: every
// row named (its transport, with any swept settings), every plot present and drawn at a real
// size with every row in its legend or labels (a fault chart: its own row), every table filled,
// and no page error, console error or network request.
//
// usage: node check-report.mjs RUN_DIR [RUN_DIR...]   (each holding results.json + report.html)
// CHROMIUM overrides the browser path (default /usr/bin/chromium); PUSHBENCH the binary that
// names the rows (default target/debug/pushbench).

import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import puppeteer from 'puppeteer-core';

/** The pushbench binary that names rows (PUSHBENCH overrides it). */
const BIN =
  process.env.PUSHBENCH ??
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../target/debug/pushbench');

/** Plots every report has; the fan-out pair only when subscriber counts were swept. */
const ALWAYS = ['spectrum', 'p99-over-time', 'p50-over-time', 'memory', 'cpu', 'wire'];
const FANOUT = ['fanout-throughput', 'fanout-p99'];

/**
 * How the report names each run's row, from pushbench itself (`pushbench rows`), so the rule
 * that builds a row's name lives once, in its key: one name per run, in results.json's order.
 */
function rowLabels(dir) {
  const lines = execFileSync(BIN, ['rows', dir], { encoding: 'utf8' }).trim().split('\n');
  return lines.filter((line) => line).map((line) => JSON.parse(line).label);
}

const rowLabel = (run) => run.label;

/**
 * The fault section's charts, one per row that went through faults (at most 12, as the report
 * draws them), each showing that row alone: `faults-I` for the I-th such row, when the repeat
 * the report reads (the first that passed, else the first) kept a timeline.
 */
function faultPlots(results, rows) {
  const plots = [];
  const faulted = rows.filter((label) =>
    results.runs.some(
      (r) =>
        rowLabel(r) === label &&
        ((r.fault_windows ?? []).length > 0 || r.gapped > 0 || r.cut_off > 0 || r.slow_consumer),
    ),
  );
  faulted.slice(0, 12).forEach((label, i) => {
    const runs = results.runs.filter((r) => rowLabel(r) === label);
    const shown = runs.find((r) => !r.failed) ?? runs[0];
    if (shown.latency_timeline) plots.push({ id: `faults-${i}`, rows: [label] });
  });
  return plots;
}

/** The storm curves: one plot per storm kind, showing every row that went through one. */
function stormPlots(results, rows) {
  const kinds = new Map();
  for (const label of rows) {
    const runs = results.runs.filter((r) => rowLabel(r) === label);
    const shown = runs.find((r) => !r.failed) ?? runs[0];
    if (!shown.storm) continue;
    kinds.set(shown.storm.kind, [...(kinds.get(shown.storm.kind) ?? []), label]);
  }
  return [...kinds].map(([kind, shows]) => ({ id: `storm-${kind}`, rows: shows }));
}

/**
 * A soak's plots: resident memory, descriptors and CPU per delivery over the stream, each
 * showing every row whose server was sampled through its stream.
 */
function resourcePlots(results, rows) {
  const sampled = rows.filter((label) => {
    const runs = results.runs.filter((r) => rowLabel(r) === label);
    const shown = runs.find((r) => !r.failed) ?? runs[0];
    return (shown.resources_over_time ?? []).length > 0;
  });
  if (sampled.length === 0) return [];
  return ['resources-rss', 'resources-fds', 'resources-cpu'].map((id) => ({ id, rows: sampled }));
}

/** What the results file says the page must show: every row by its name. */
function expected(results) {
  const rows = [...new Set(results.runs.map(rowLabel))];
  // Fan-out plots: more than one subscriber count at the first run's payload and rate.
  const first = results.runs[0];
  const swept = new Set(
    results.runs
      .filter((r) => r.payload === first.payload && r.offered_rate === first.offered_rate)
      .map((r) => r.subscribers),
  );
  // A row whose every round failed has no figures to draw: its tables say so, its plots leave
  // it out.
  const measured = rows.filter((label) => results.runs.some((r) => rowLabel(r) === label && !r.failed));
  const plots = (swept.size > 1 ? [...ALWAYS, ...FANOUT] : ALWAYS).map((id) => ({ id, rows: measured }));
  return {
    rows,
    plots: [...plots, ...faultPlots(results, rows), ...stormPlots(results, rows), ...resourcePlots(results, rows)],
  };
}

async function check(browser, dir) {
  const results = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
  const labels = rowLabels(dir);
  if (labels.length !== results.runs.length) throw new Error(`${dir}: pushbench rows disagrees with results.json`);
  results.runs.forEach((run, i) => {
    run.label = labels[i];
  });
  const { rows, plots } = expected(results);
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
  page.on('requestfailed', (r) => problems.push(`failed request: ${r.url()}`));
  page.on('request', (r) => {
    if (!r.url().startsWith('file:')) problems.push(`network request: ${r.url()}`);
  });
  const url = pathToFileURL(path.resolve(dir, 'report.html')).href;
  const response = await page.goto(url, { waitUntil: 'load' });
  if (!response || !response.ok()) problems.push(`could not load ${url}`);

  const seen = await page.evaluate(() => ({
    text: document.body.innerText,
    title: document.title,
    tables: [...document.querySelectorAll('table')].map((t) => t.querySelectorAll('tbody tr').length),
    figures: [...document.querySelectorAll('figure.plot')].map((f) => {
      const svg = f.querySelector('svg');
      const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
      return {
        id: f.id,
        width: box.width,
        height: box.height,
        texts: svg ? [...svg.querySelectorAll('text')].map((t) => t.textContent.trim()) : [],
        marks: svg ? svg.querySelectorAll('polyline, rect').length : 0,
      };
    }),
  }));

  if (!seen.title.includes(results.scenario.name)) problems.push(`title "${seen.title}" lacks the scenario`);
  for (const row of rows) {
    if (!seen.text.includes(row)) problems.push(`page never names ${row}`);
  }
  if (seen.tables.length < 5 || seen.tables.some((rows) => rows === 0)) {
    problems.push(`tables missing or empty: ${JSON.stringify(seen.tables)}`);
  }
  for (const { id: plot, rows: shows } of plots) {
    const figure = seen.figures.find((f) => f.id === `plot-${plot}`);
    if (!figure) {
      problems.push(`plot ${plot} missing`);
      continue;
    }
    if (figure.width < 200 || figure.height < 100) {
      problems.push(`plot ${plot} drawn at ${figure.width}x${figure.height}`);
    }
    if (figure.marks <= shows.length) problems.push(`plot ${plot} draws no data`);
    for (const row of shows) {
      if (!figure.texts.includes(row)) problems.push(`plot ${plot} does not show ${row}`);
    }
  }
  const ids = plots.map((p) => p.id);
  const extra = seen.figures.map((f) => f.id.replace(/^plot-/, '')).filter((id) => !ids.includes(id));
  if (extra.length) problems.push(`unexpected plots: ${extra.join(', ')}`);
  await page.close();
  return { problems, rows, plots };
}

const dirs = process.argv.slice(2);
if (dirs.length === 0) {
  console.error('usage: node check-report.mjs RUN_DIR [RUN_DIR...]');
  process.exit(2);
}
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let failed = 0;
try {
  for (const dir of dirs) {
    const { problems, rows, plots } = await check(browser, dir);
    if (problems.length) {
      failed += 1;
      console.error(`FAIL ${dir}`);
      for (const p of problems) console.error(`  ${p}`);
    } else {
      console.log(`ok   ${dir}: ${rows.length} rows, ${plots.length} plots, no errors`);
    }
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
