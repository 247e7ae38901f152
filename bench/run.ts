// npm run bench [-- scenario ...]: the platform beside the bare tools it is built on, in one run.
// Prints a table, writes bench/results/<time>.json, latest.json and latest.png.
// First: @hono/zod-openapi extends zod before any schema is built (scenarios that build the API need it).
import '@hono/zod-openapi';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { renderChart } from './chart.js';
import * as core from './core.js';
import type { Row } from './core.js';
import { ROOT } from './lib.js';

const DURATION = Number(process.env.BENCH_SECONDS ?? 10);
const BUDGET_MS = Number(process.env.BENCH_BUDGET_S ?? 1500) * 1000;

const scenarios: Record<string, () => Promise<Row[]>> = {
  enqueue: () => core.enqueue(DURATION),
  status: () => core.status(DURATION),
  worker: () => core.workerOverhead(),
  e2e: () => core.endToEnd(),
};
// Each job type's own benchmark, where its module exists: bench/<area>.ts exporting run().
for (const area of ['email', 'images', 'reports', 'recommendations', 'search', 'fairness', 'retention']) {
  const file = path.join(ROOT, 'bench', `${area}.ts`);
  if (!existsSync(file)) continue;
  scenarios[area] = async () => {
    const mod = (await import(pathToFileURL(file).href)) as {
      run: () => Promise<Record<string, number | string | boolean>>;
    };
    const figures = await mod.run();
    return toRows(area, figures);
  };
}

/** An area's figures become rows: `<name>` with optional `<name>_anchor`, `<name>_target`, `<name>_ok`, `<name>_unit`. */
function toRows(area: string, f: Record<string, number | string | boolean>): Row[] {
  const rows: Row[] = [];
  for (const [k, v] of Object.entries(f)) {
    if (typeof v !== 'number' || /_(anchor|target|ok|unit)$/.test(k)) continue;
    const anchor = typeof f[`${k}_anchor`] === 'number' ? (f[`${k}_anchor`] as number) : null;
    rows.push({
      scenario: `${area}: ${k}`,
      platform: Math.round(v * 100) / 100,
      anchor,
      unit: String(f[`${k}_unit`] ?? ''),
      ratio: anchor ? Math.round((v / anchor) * 1000) / 1000 : null,
      target: String(f[`${k}_target`] ?? ''),
      ok: typeof f[`${k}_ok`] === 'boolean' ? (f[`${k}_ok`] as boolean) : null,
      detail: {},
    });
  }
  return rows;
}

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !scenarios[w]);
if (unknown.length) {
  console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const selected = wanted.length ? wanted : Object.keys(scenarios);
const watchdog = setTimeout(() => {
  console.error(`benchmark exceeded its ${BUDGET_MS / 1000} s budget; stopping`);
  process.exit(1);
}, BUDGET_MS);
watchdog.unref();

const rows: Row[] = [];
const failures: Record<string, string> = {};
for (const name of selected) {
  const t0 = Date.now();
  process.stderr.write(`running ${name}…\n`);
  try {
    rows.push(...(await scenarios[name]()));
  } catch (err) {
    failures[name] = (err as Error).stack ?? String(err);
    process.stderr.write(`  ${name} failed: ${(err as Error).message}\n`);
  }
  process.stderr.write(`  ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}

const machine = {
  cpus: os.cpus().length,
  cpu: os.cpus()[0]?.model ?? '?',
  mem_gib: Math.round(os.totalmem() / 1024 ** 3),
  node: process.version,
  platform: `${os.type()} ${os.release()}`,
};
const fmt = (n: number | null) => (n === null ? '—' : String(n));
const lines = [
  `| scenario | platform | anchor | unit | ratio | target | met |`,
  `|---|---:|---:|---|---:|---|---|`,
  ...rows.map(
    (r) =>
      `| ${r.scenario} | ${fmt(r.platform)} | ${fmt(r.anchor)} | ${r.unit} | ${fmt(r.ratio)} | ${r.target} | ${r.ok === null ? '' : r.ok ? 'yes' : 'NO'} |`,
  ),
];
console.log(`\n${machine.cpus} × ${machine.cpu}, ${machine.mem_gib} GiB, Node ${machine.node}\n`);
console.log(lines.join('\n'));
const details = rows
  .filter((r) => Object.keys(r.detail).length)
  .map(
    (r) =>
      `  ${r.scenario}: ${Object.entries(r.detail)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ')}`,
  );
if (details.length) console.log(`\n${details.join('\n')}`);

const dir = path.join(ROOT, 'bench/results');
mkdirSync(dir, { recursive: true });
const result = { at: new Date().toISOString(), machine, rows, failures };
const stamp = result.at.replace(/[:.]/g, '-');
writeFileSync(path.join(dir, `${stamp}.json`), JSON.stringify(result, null, 2));
writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(result, null, 2));
await renderChart(rows, path.join(dir, 'latest.png'));
console.log(`\nwrote bench/results/${stamp}.json, latest.json and latest.png`);
process.exit(Object.keys(failures).length ? 1 : 0);
