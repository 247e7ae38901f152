// npm run test:mutation [-- name ...]: runs each module's Stryker configuration in turn (all of them, or the named
// ones), so one module's threshold failing does not hide the others' results; exits non-zero if any failed.
import { spawnSync } from 'node:child_process';

const modules = [
  'guard',
  'address',
  'group-commit',
  'window-counter',
  'jobs',
  'auth',
  'deliveries',
  'rate-limit',
  'reconciler',
];
const chosen = process.argv.slice(2).length ? process.argv.slice(2) : modules;
const unknown = chosen.filter((m) => !modules.includes(m));
if (unknown.length) {
  console.error(`unknown module(s): ${unknown.join(', ')}; known: ${modules.join(', ')}`);
  process.exit(2);
}

const results = [];
const started = Date.now();
for (const name of chosen) {
  const t0 = Date.now();
  const run = spawnSync('npx', ['stryker', 'run', `stryker/${name}.config.mjs`], { stdio: 'inherit' });
  results.push({ name, ok: run.status === 0, seconds: Math.round((Date.now() - t0) / 1000) });
}
for (const r of results) console.log(`${r.ok ? 'ok    ' : 'FAILED'} ${r.name} (${r.seconds} s)`);
console.log(`mutation testing: ${Math.round((Date.now() - started) / 1000)} s; reports in reports/mutation/`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
