// A job taken again by the very worker whose run of it lost its lock (Redis stalled past the lock, an event loop
// blocked): two runs of one job id in one process. BullMQ's lock manager tracks one run per job id, so the end of the
// old run used to stop the renewal of the new one's lock: the job stalled again, and a third run started while the
// second still went on (email-lock-lapse.test.ts: the second run's failure then set the third's ledger row back).
// The platform's workers (src/queues/index.ts) renew the newest run's lock until that run ends. Real Redis.
import { Queue, type Job } from 'bullmq';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createWorker } from '../src/queues/index.js';
import { bullPrefix } from '../src/queues/keys.js';
import { createTestEnv, silentLog, sleep, waitFor, type TestEnv } from './helpers.js';

const LOCK_MS = 1500;
const NAME = 'lock_test';
let env: TestEnv;
let queue: Queue;

beforeAll(async () => {
  env = await createTestEnv('worker_lock', { testJobs: false });
  queue = new Queue(NAME, { connection: env.redis, prefix: bullPrefix(env.config, NAME) });
});

afterAll(async () => {
  await queue?.close();
  await env?.close();
});

it('a worker that takes a job again while its old run of it still ends keeps renewing the new run’s lock', {
  timeout: 60_000,
}, async () => {
  const runs: string[] = [];
  let secondStarted: () => void = () => {};
  const second = new Promise<void>((r) => (secondStarted = r));
  const stalled: string[] = [];
  const lost: string[] = [];
  const worker = createWorker(
    { config: env.config, log: silentLog },
    NAME,
    async (job: Job, token?: string) => {
      const n = runs.push(token!);
      if (n === 1) {
        // The first run loses its lock while it lives; it ends only once the same worker has taken the job again.
        await env.redis.del(`${bullPrefix(env.config, NAME)}:${NAME}:${job.id}:lock`);
        await second;
        return 'first';
      }
      if (n === 2) {
        secondStarted();
        // Long enough for a lock nobody renews to lapse and be found stalled twice over.
        await sleep(4 * LOCK_MS);
        return 'second';
      }
      return 'third';
    },
    { concurrency: 2, lockDuration: LOCK_MS, stalledInterval: LOCK_MS, maxStalledCount: 5 },
  );
  worker.on('stalled', (id) => stalled.push(id));
  worker.on('lockRenewalFailed', (ids) => lost.push(...ids));
  try {
    const job = await queue.add('x', {});
    await waitFor(async () => (await queue.getJobState(job.id!)) === 'completed', {
      timeout: 30_000,
      what: 'the job to complete',
    });
    const done = await queue.getJob(job.id!);
    // The scenario happened: the first run's lock was lost and the job stalled once...
    expect(lost).toContain(job.id);
    expect(stalled).toEqual([job.id]);
    // ...and the second run, renewed to its end, is the one that completed it: no third run.
    expect(runs).toHaveLength(2);
    expect(done?.returnvalue).toBe('second');
  } finally {
    await worker.close(true);
  }
});

it('a worker still renews a job’s lock after a run of it ended while a newer one goes on, and stops once both ended', {
  timeout: 60_000,
}, async () => {
  // The order reversed: the newer run ends first, the older (lock lost) one after. Nothing is renewed past the end.
  const runs: string[] = [];
  let releaseFirst: () => void = () => {};
  const firstMayEnd = new Promise<void>((r) => (releaseFirst = r));
  const worker = createWorker(
    { config: env.config, log: silentLog },
    NAME,
    async (job: Job, token?: string) => {
      const n = runs.push(token!);
      if (n === 1) {
        await env.redis.del(`${bullPrefix(env.config, NAME)}:${NAME}:${job.id}:lock`);
        await firstMayEnd;
        return 'first';
      }
      return 'second';
    },
    { concurrency: 2, lockDuration: LOCK_MS, stalledInterval: LOCK_MS, maxStalledCount: 5 },
  );
  const errors: string[] = [];
  worker.on('error', (err) => errors.push(err.message));
  try {
    const job = await queue.add('y', {});
    await waitFor(async () => (await queue.getJobState(job.id!)) === 'completed', {
      timeout: 30_000,
      what: 'the job to complete',
    });
    expect((await queue.getJob(job.id!))?.returnvalue).toBe('second');
    const before = errors.length;
    releaseFirst();
    // A completed job has no lock to renew: no renewal of it is attempted (and fails) after its runs ended.
    await sleep(2 * LOCK_MS);
    expect(errors.slice(before).filter((m) => m.includes('could not renew lock'))).toEqual([]);
    expect(runs).toHaveLength(2);
  } finally {
    releaseFirst();
    await worker.close(true);
  }
});
