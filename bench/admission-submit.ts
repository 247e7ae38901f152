// The submit's cost of admission for a quiet tenant (issue 19: "a quiet tenant's submit latency must not change"): one
// job at a time through submit() (ledger insert, admission, BullMQ add), with admission on and off, alternating in
// blocks so drift in the machine's load favours neither. Each job is ended (untimed) after its submit, so the tenant
// stays quiet; no admitter runs, so its window's bound is never refreshed and the statement's stale-bound recheck is
// paid about once per window of submits (the worst case).
// Standalone: `node --import tsx bench/admission-submit.ts` (ROUNDS, BLOCK to change the counts).
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import * as ledger from '../src/db/jobs.js';
import { createRegistry, loadJobModules } from '../src/jobs/index.js';
import { submit } from '../src/jobs/submit.js';
import { Queues } from '../src/queues/index.js';
import { createRedis } from '../src/queues/redis.js';
import { pino } from 'pino';
import { createStack, ROOT, round } from './lib.js';

const ROUNDS = Number(process.env.ROUNDS ?? 6);
const BLOCK = Number(process.env.BLOCK ?? 200);

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.ceil((xs.length * p) / 100) - 1];

export async function run(): Promise<Record<string, number>> {
  const stack = await createStack('admission_submit');
  try {
    const redis = createRedis(stack.config, 'producer');
    const registry = await loadJobModules(createRegistry(), [path.join(ROOT, 'bench/fixtures/bench-jobs.ts')]);
    const deps = (mode: 'on' | 'off') => ({
      config: loadConfig({ ...stack.env, ADMISSION: mode }),
      db: stack.db,
      queues: new Queues(stack.config, redis),
      registry,
      log: pino({ level: 'silent' }),
    });
    const modes = { on: deps('on'), off: deps('off') };
    const times = { on: [] as number[], off: [] as number[] };
    const insert = async (mode: 'on' | 'off') => {
      const t0 = performance.now();
      const [row] = await submit(modes[mode], stack.tenant, [
        { type: 'noop', state: 'queued', priority: 'normal', payload: '{}', max_attempts: 1 },
      ]);
      times[mode].push(performance.now() - t0);
      await ledger.markSucceededMany(stack.db, [{ id: row.id, gen: row.generation, result: null }]);
    };
    for (let i = 0; i < 50; i++) await insert(i % 2 ? 'on' : 'off'); // warm-up
    times.on.length = 0;
    times.off.length = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (const mode of r % 2 ? (['on', 'off'] as const) : (['off', 'on'] as const))
        for (let i = 0; i < BLOCK; i++) await insert(mode);
    }
    await Promise.all([modes.on.queues.close(), modes.off.queues.close()]);
    redis.disconnect();
    return {
      inserts_each: times.on.length,
      on_p50_ms: round(pct(times.on, 50), 3),
      off_p50_ms: round(pct(times.off, 50), 3),
      on_p99_ms: round(pct(times.on, 99), 3),
      off_p99_ms: round(pct(times.off, 99), 3),
    };
  } finally {
    await stack.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const figures = await run();
  console.log(JSON.stringify(figures));
  process.exit(0);
}
