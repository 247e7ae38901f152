// Scale-out figures for sizing (docs/deploy.md): how throughput grows with worker processes, for CPU-light jobs
// (the platform's own per-job cost) and for jobs that wait (slots: processes × concurrency); the same on a 3-master
// Redis Cluster; and Redis memory per waiting job.
// Standalone: `node --import tsx bench/scale.ts` (JOBS=… to change the count). Prints a table and a JSON line.
// Every process shares this machine's cores with PostgreSQL and Redis: the figures are indicative, not capacity.
import { pathToFileURL } from 'node:url';
import { bullPrefix } from '../src/queues/keys.js';
import { createTestEnv, startProcess, tenantWithKeys, type Proc, type TestEnv } from '../test/helpers.js';
import { startRedisCluster } from '../test/support/redis-cluster.js';

const JOBS = Number(process.env.JOBS ?? 3000);
const START = { startTimeoutMs: 120_000 };
const BENCH_ENV = {
  NODE_ENV: 'production',
  RATE_LIMIT_PER_MINUTE: '0',
  RECONCILE_INTERVAL_MS: '10000',
  RECONCILE_GRACE_MS: '30000',
  WORKER_LOCK_MS: '30000',
};

interface Run {
  jobs: number;
  seconds: number;
  jobsPerSecond: number;
}

/**
 * Submits `jobs` jobs of `type` while the queue is paused, then resumes it, so every worker starts together; the
 * rate is jobs / (last finish − first start) from the ledger, which leaves out submission and process start-up.
 */
async function drain(
  env: TestEnv,
  web: Proc,
  key: string,
  type: string,
  jobs: number,
  payload: Record<string, unknown>,
): Promise<Run> {
  const queue = env.queues.get(type);
  await queue.pause();
  for (let i = 0; i < jobs; i += 1000) {
    const res = await fetch(`${web.url}/v1/jobs/bulk`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: Array.from({ length: Math.min(1000, jobs - i) }, () => ({ type, payload })) }),
    });
    if (res.status !== 202) throw new Error(`bulk submit: ${res.status} ${await res.text()}`);
  }
  await queue.resume();
  for (;;) {
    const r = await env.db
      .selectFrom('jobs')
      .select((e) => [
        e.fn.countAll<string>().as('n'),
        e.fn.min('started_at').as('first'),
        e.fn.max('finished_at').as('last'),
      ])
      .where('type', '=', type)
      .where('state', 'in', ['succeeded', 'failed'])
      .executeTakeFirstOrThrow();
    if (Number(r.n) >= jobs) {
      const seconds = ((r.last as Date).getTime() - (r.first as Date).getTime()) / 1000;
      await env.db.deleteFrom('jobs').where('type', '=', type).execute();
      return { jobs, seconds: round(seconds), jobsPerSecond: round(jobs / seconds, 0) };
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}

const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

/** Worker processes 1, 2, 4 against one stack; each step adds processes to the ones already running. */
async function scaling(
  label: string,
  extraEnv: Record<string, string>,
  steps: number[],
  out: Record<string, number | string>,
) {
  const env = await createTestEnv(`bench_${label}`, { env: { ...BENCH_ENV, ...extraEnv } });
  const { clientKey } = await tenantWithKeys(env);
  const web = await startProcess('web', env.env, {}, START);
  const workers: Proc[] = [];
  try {
    for (const n of steps) {
      // The test fixture's job types: `test` with no payload is a no-op; `serial` sleeps.
      while (workers.length < n)
        workers.push(
          await startProcess(
            'worker',
            env.env,
            { QUEUES: 'test,serial', WORKER_CONCURRENCY: 'test=32,serial=10' },
            START,
          ),
        );
      const noop = await drain(env, web, clientKey, 'test', JOBS, {});
      out[`${label}_noop_${n}w_jobs_per_s`] = noop.jobsPerSecond;
      if (label === 'single') {
        // 100 ms jobs, 10 slots per process: at most 100 jobs/s per process, whatever the CPU.
        const waiting = await drain(env, web, clientKey, 'serial', Math.min(JOBS, 400 * n), { sleep_ms: 100 });
        out[`${label}_sleep100ms_${n}w_jobs_per_s`] = waiting.jobsPerSecond;
      }
    }
    if (label === 'single') out.redis_bytes_per_waiting_job = await bytesPerWaitingJob(env, web, clientKey);
  } finally {
    await Promise.all([web, ...workers].map((p) => p.stop()));
    await env.close();
  }
}

/** Redis memory of a waiting job: every key of a paused queue holding `n` jobs (MEMORY USAGE), divided by n. */
async function bytesPerWaitingJob(env: TestEnv, web: Proc, key: string, n = 2000): Promise<number> {
  const queue = env.queues.get('test');
  await queue.pause();
  for (let i = 0; i < n; i += 1000) {
    const res = await fetch(`${web.url}/v1/jobs/bulk`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: Array.from({ length: 1000 }, () => ({ type: 'test', payload: { value: i } })) }),
    });
    if (res.status !== 202) throw new Error(`bulk submit: ${res.status}`);
  }
  const redis = env.redis as import('ioredis').Redis;
  const prefix = `${bullPrefix(env.config, 'test')}:test:`;
  let bytes = 0;
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    const sizes = await Promise.all(found.map((k) => redis.memory('USAGE', k, 'SAMPLES', '0')));
    bytes += sizes.reduce<number>((a, b) => a + Number(b ?? 0), 0);
  } while (cursor !== '0');
  await queue.obliterate({ force: true });
  return Math.round(bytes / n);
}

export async function run(): Promise<Record<string, number | string>> {
  const out: Record<string, number | string> = { jobs: JOBS, cores: (await import('node:os')).cpus().length };
  await scaling('single', {}, [1, 2, 4], out);
  const cluster = await startRedisCluster(3);
  try {
    await scaling('cluster', { REDIS_URL: cluster.url, REDIS_CLUSTER: 'true' }, [1, 2], out);
  } finally {
    await cluster.stop();
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const figures = await run();
  console.table(Object.entries(figures).map(([k, v]) => ({ figure: k, value: v })));
  console.log(JSON.stringify(figures));
  process.exit(0);
}
