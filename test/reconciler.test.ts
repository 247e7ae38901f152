// Issue 24, in process: the reconciler's decisions (src/workers/reconciler.ts) against real Redis and PostgreSQL, with
// no worker running. The ledger rows and BullMQ's job hashes are put in the states a lost write leaves (a job missing
// from Redis, one BullMQ finished while the ledger still says live), and one pass must repair exactly those.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ledger from '../src/db/jobs.js';
import type { JobRow } from '../src/db/types.js';
import { enqueue } from '../src/jobs/enqueue.js';
import { newId } from '../src/ids.js';
import { bullPrefix, keys } from '../src/queues/keys.js';
import { createRedis } from '../src/queues/redis.js';
import { reconcileOnce, startReconciler } from '../src/workers/reconciler.js';
import { createTestEnv, silentLog, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let tenant: string;
beforeAll(async () => {
  env = await createTestEnv('reconciler');
  tenant = (await tenantWithKeys(env)).tenant;
});
afterAll(() => env?.close());

const deps = () => ({
  config: env.config,
  db: env.db,
  redis: env.redis,
  queues: env.queues,
  storage: env.storage,
  registry: env.registry,
  log: silentLog,
});
const reconcile = (graceMs = 0, since?: Date) => reconcileOnce(deps(), graceMs, since);

/** A live ledger row of the `test` type (or another), queued in BullMQ unless `enqueued` is false. */
async function job(opts: { type?: string; state?: 'queued' | 'running'; enqueued?: boolean } = {}): Promise<JobRow> {
  const [row] = await ledger.insertJobs(env.db, [
    {
      id: newId(),
      tenant,
      type: opts.type ?? 'test',
      state: opts.state ?? 'queued',
      priority: 'normal',
      payload: JSON.stringify({}),
      max_attempts: 1,
    },
  ]);
  if (opts.enqueued !== false) await enqueue(env.queues, env.registry, [row]);
  return row;
}

const hashKey = (row: JobRow) => `${bullPrefix(env.config, row.type)}:${row.type}:${row.id}`;
/** What BullMQ's job hash holds once it has finished the job for good. */
async function finishInBull(row: JobRow, fields: Record<string, string>, gen?: number) {
  await env.redis.hset(hashKey(row), { finishedOn: String(Date.now()), ...fields });
  if (gen !== undefined) await env.redis.hset(hashKey(row), 'data', JSON.stringify({ tenant, gen }));
}
const stored = (row: JobRow) => ledger.findJob(env.db, row.id);

describe('reconcileOnce', () => {
  it('queues a job missing from Redis again as a new generation, once', async () => {
    const lost = await job({ enqueued: false });
    const present = await job();
    const r = await reconcile();
    expect(r.requeued).toContain(lost.id);
    expect(r.requeued).not.toContain(present.id);
    expect(r.settled).not.toContain(present.id);
    expect(await stored(lost)).toMatchObject({ state: 'queued', generation: 1 });
    expect((await env.queues.get('test').getJob(lost.id))?.data).toEqual({ tenant, gen: 1 });
    expect((await reconcile()).requeued).not.toContain(lost.id);
    expect(await stored(lost)).toMatchObject({ generation: 1 });
  });

  it('checks only the rows past the grace period, and with `since` only those changed after it', async () => {
    const lost = await job({ enqueued: false });
    const soon = await reconcile(60_000);
    expect(soon.requeued).not.toContain(lost.id);
    expect(soon.horizon.getTime()).toBeLessThan(Date.now() - 50_000);
    const later = await reconcile(0, new Date(Date.now() + 60_000));
    expect(later).toMatchObject({ checked: 0, requeued: [], settled: [] });
    const live = await env.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('state', 'in', ledger.LIVE)
      .executeTakeFirstOrThrow();
    const now = await reconcile(0, new Date(Date.now() - 60_000));
    expect(now.checked).toBe(Number(live.n));
    expect(now.requeued).toEqual([lost.id]);
    expect(now.horizon.getTime()).toBeGreaterThan(Date.now() - 50_000);
  });

  it('leaves a row of a type this process does not know alone, though it counts it as checked', async () => {
    const unknown = await job({ type: 'no-such-type', enqueued: false });
    const r = await reconcile(0, new Date(Date.now() - 60_000));
    expect(r.requeued).not.toContain(unknown.id);
    expect(r.checked).toBeGreaterThanOrEqual(1);
    expect(await stored(unknown)).toMatchObject({ state: 'queued', generation: 0 });
  });

  it('writes the outcome BullMQ recorded: a result (JSON or not), a cancel, a failure', async () => {
    const json = await job({ state: 'running' });
    const text = await job({ state: 'running' });
    const cancelled = await job({ state: 'running' });
    const failed = await job({ state: 'running' });
    const noReason = await job({ state: 'running' });
    await finishInBull(json, { returnvalue: '{"frames":3}' });
    await finishInBull(text, { returnvalue: 'not json' });
    await finishInBull(cancelled, { failedReason: 'cancelled' });
    await finishInBull(failed, { failedReason: 'bad_input: the frame is empty' });
    await finishInBull(noReason, {});
    const r = await reconcile();
    expect([...r.settled].sort()).toEqual([json.id, text.id, cancelled.id, failed.id, noReason.id].sort());
    expect(r.requeued).not.toContain(json.id);
    expect(await stored(json)).toMatchObject({ state: 'succeeded', result: { frames: 3 } });
    expect(await stored(text)).toMatchObject({ state: 'succeeded', result: 'not json' });
    expect(await stored(cancelled)).toMatchObject({ state: 'cancelled' });
    expect(await stored(failed)).toMatchObject({
      state: 'failed',
      error: { code: 'bad_input', message: 'the frame is empty' },
    });
    expect(await stored(noReason)).toMatchObject({ state: 'failed', error: { message: 'failed' } });
    // Settled rows are no longer live: the next pass has nothing to do with them.
    const again = await reconcile();
    expect(again.settled).toEqual([]);
  });

  it('publishes the settled state on the job events channel', async () => {
    const row = await job({ state: 'running' });
    await finishInBull(row, { returnvalue: '1' });
    const sub = createRedis(env.config, 'subscriber');
    const seen: { event: string; job: { id: string; state: string } }[] = [];
    sub.on('message', (_c: string, m: string) => seen.push(JSON.parse(m)));
    await sub.subscribe(keys(env.config).events);
    try {
      expect((await reconcile()).settled).toEqual([row.id]);
      await waitFor(async () => seen.some((e) => e.job?.id === row.id));
      expect(seen.filter((e) => e.job?.id === row.id).map((e) => [e.event, e.job.state])).toEqual([
        ['state', 'succeeded'],
      ]);
    } finally {
      sub.disconnect();
    }
  });

  it("fences on the generation: a newer generation's outcome is left alone, an older one's job is replaced", async () => {
    const newer = await job({ state: 'running' });
    await finishInBull(newer, { returnvalue: '1' }, 1);
    const older = await job({ state: 'running' });
    await env.db.updateTable('jobs').set({ generation: 2 }).where('id', '=', older.id).execute();
    await finishInBull(older, { returnvalue: '1' }, 1);
    const r = await reconcile();
    expect(r.settled).not.toContain(newer.id);
    expect(r.requeued).not.toContain(newer.id);
    expect(await stored(newer)).toMatchObject({ state: 'running', generation: 0 });
    expect(r.settled).not.toContain(older.id);
    expect(r.requeued).toContain(older.id);
    expect(await stored(older)).toMatchObject({ generation: 3, result: null });
    expect((await env.queues.get('test').getJob(older.id))?.data).toEqual({ tenant, gen: 3 });
    expect(await env.redis.hget(hashKey(older), 'finishedOn')).toBeNull();
    // A job hash with unreadable data counts as generation 0: this row's own.
    const garbled = await job({ state: 'running' });
    await finishInBull(garbled, { returnvalue: '2', data: '{oops' });
    expect((await reconcile()).settled).toEqual([garbled.id]);
  });
});

describe('startReconciler', () => {
  it('runs passes while no other process holds the lock, releases it, and keeps the horizon for incremental passes', async () => {
    const { reconcilerLock, reconcilerHorizon } = keys(env.config);
    await env.redis.del(reconcilerHorizon);
    await env.redis.set(reconcilerLock, 'another-process');
    const lost = await job({ enqueued: false });
    const r = startReconciler(deps());
    try {
      // Two intervals pass under the other process's lock: nothing done, its lock untouched.
      await new Promise((resolve) => setTimeout(resolve, env.config.RECONCILE_INTERVAL_MS * 2.5));
      expect(await stored(lost)).toMatchObject({ generation: 0 });
      expect(await env.redis.get(reconcilerLock)).toBe('another-process');
      await env.redis.del(reconcilerLock);
      await waitFor(async () => (await stored(lost))?.generation === 1);
      // A full scan sets the horizon with an expiry (a periodic full scan); an incremental pass keeps it.
      await waitFor(async () => (await env.redis.pttl(reconcilerHorizon)) > 0);
      const ttl = await env.redis.pttl(reconcilerHorizon);
      expect(ttl).toBeLessThanOrEqual(10 * 60_000);
      const first = Number(await env.redis.get(reconcilerHorizon));
      await waitFor(async () => Number(await env.redis.get(reconcilerHorizon)) > first);
      expect(await env.redis.pttl(reconcilerHorizon)).toBeGreaterThan(0);
      expect(await env.redis.pttl(reconcilerHorizon)).toBeLessThanOrEqual(ttl);
    } finally {
      await r.stop();
    }
    expect(await env.redis.get(reconcilerLock)).toBeNull();
  });
});
