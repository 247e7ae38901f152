// Operator surfaces under load: /metrics and /v1/queues with a deep queue, the per-request cost of the metrics
// middleware, and how late a schedule's tick becomes a ledger job. In process against real Redis and PostgreSQL.
// Standalone: `node --import tsx bench/operators.ts` (DEPTH=… waiting jobs, default 50,000). Figures are indicative:
// other work on the machine moves them.
import { pathToFileURL } from 'node:url';
import { Hono } from 'hono';
import { pino } from 'pino';
import { createApp } from '../src/api/app.js';
import { createKey } from '../src/auth/keys.js';
import { createRegistry, loadJobModules } from '../src/jobs/index.js';
import { httpMetrics } from '../src/metrics.js';
import { Queues } from '../src/queues/index.js';
import { createRedis, waitForRedis } from '../src/queues/redis.js';
import { saveSchedule } from '../src/db/schedules.js';
import { installScheduler, startScheduleWorker } from '../src/schedules/index.js';
import { DirectoryStorage } from '../src/files/storage.js';
import { createStack, round, sleep } from './lib.js';

const DEPTH = Number(process.env.DEPTH ?? 50_000);

function quantiles(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { p50: round(at(0.5)), p95: round(at(0.95)), max: round(s[s.length - 1]) };
}

async function timeEach(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

export async function run(): Promise<Record<string, number | string>> {
  const stack = await createStack('operators');
  const log = pino({ level: 'silent' });
  const redis = createRedis(stack.config, 'producer');
  redis.on('error', () => {});
  await waitForRedis(redis);
  const queues = new Queues(stack.config, redis);
  const registry = await loadJobModules(createRegistry(), stack.config.jobModules);
  const storage = new DirectoryStorage(stack.config.STORAGE_DIR);
  const deps = { config: stack.config, db: stack.db, redis, queues, registry, storage, log };
  const app = createApp(deps);
  const { key } = await createKey(stack.db, stack.config.API_KEY_SECRET, stack.tenant, 'operator');
  const auth = { headers: { authorization: `Bearer ${key}` } };
  const result: Record<string, number | string> = { depth: DEPTH };
  let schedules: Awaited<ReturnType<typeof startScheduleWorker>> | undefined;
  try {
    // A deep queue: counts come from Redis in O(1) per state, whatever the depth.
    const noop = queues.get('noop');
    for (let i = 0; i < DEPTH; i += 5_000) {
      await noop.addBulk(
        Array.from({ length: Math.min(5_000, DEPTH - i) }, (_, j) => ({
          name: 'noop',
          data: { tenant: stack.tenant },
          opts: { jobId: `bench-${i + j}`, priority: 5 },
        })),
      );
    }
    await app.request('/metrics', auth);
    const scrape = quantiles(await timeEach(200, async () => (await app.request('/metrics', auth)).text()));
    result.metrics_scrape_p50_ms = scrape.p50;
    result.metrics_scrape_p95_ms = scrape.p95;
    const list = quantiles(await timeEach(200, async () => (await app.request('/v1/queues', auth)).json()));
    result.queues_list_p50_ms = list.p50;
    result.queues_list_p95_ms = list.p95;

    // The middleware alone: a bare Hono app with and without it, 20,000 requests each, alternating rounds.
    const bare = new Hono().get('/x/:id', (c) => c.text('ok'));
    const measured = new Hono().use('*', httpMetrics()).get('/x/:id', (c) => c.text('ok'));
    const per = async (a: Hono) => {
      const t = performance.now();
      for (let i = 0; i < 5_000; i++) await a.request(`/x/${i}`);
      return ((performance.now() - t) * 1000) / 5_000;
    };
    let without = 0;
    let withMw = 0;
    for (let r = 0; r < 4; r++) {
      without += await per(bare);
      withMw += await per(measured);
    }
    result.http_metrics_overhead_us = round((withMw - without) / 4);

    // Schedule tick lag: every second for 8 s, from the tick's time to the ledger job's created_at.
    schedules = await startScheduleWorker(deps);
    const { row } = await saveSchedule(stack.db, {
      name: 'bench-tick',
      tenant: stack.tenant,
      type: 'noop',
      payload: {},
      priority: 'normal',
      cron: null,
      every_ms: 1000,
      tz: null,
    });
    await installScheduler(queues, row);
    await sleep(8_000);
    await queues.get('schedules').removeJobScheduler('bench-tick');
    const jobs = await stack.db
      .selectFrom('jobs')
      .select(['idempotency_key', 'created_at'])
      .where('idempotency_key', 'like', 'schedule:repeat:bench-tick:%')
      .execute();
    const lags = jobs.map((j) => j.created_at.getTime() - Number(j.idempotency_key!.split(':').pop()));
    const lag = quantiles(lags);
    result.schedule_ticks = jobs.length;
    result.schedule_tick_lag_p50_ms = lag.p50;
    result.schedule_tick_lag_max_ms = lag.max;
    result.note = 'indicative: other processes share the 2 cores';
  } finally {
    await schedules?.close();
    await queues.close();
    redis.disconnect();
    await stack.close();
  }
  return result;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const result = await run();
  console.table(Object.entries(result).map(([metric, value]) => ({ metric, value })));
  console.log(JSON.stringify(result));
  process.exit(0);
}
