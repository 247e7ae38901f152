// Issue 24, in process: the reconciler's decisions (src/workers/reconciler.ts) against real Redis and PostgreSQL, with
// no worker running. The ledger rows and BullMQ's job hashes are put in the states a lost write leaves (a job missing
// from Redis, one BullMQ finished while the ledger still says live), and one pass must repair exactly those.
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ledger from '../src/db/jobs.js';
import type { JobRow } from '../src/db/types.js';
import { enqueue } from '../src/jobs/enqueue.js';
import { newId } from '../src/ids.js';
import { bullPrefix, keys } from '../src/queues/keys.js';
import { createRedis } from '../src/queues/redis.js';
import { reconcilerRepairs } from '../src/metrics.js';
import { messageId, WEBHOOK_QUEUE } from '../src/webhooks/delivery.js';
import { reconcileOnce, startReconciler } from '../src/workers/reconciler.js';
import { createTestEnv, silentLog, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let tenant: string;
beforeAll(async () => {
  env = await createTestEnv('reconciler');
  tenant = (await tenantWithKeys(env)).tenant;
});
afterAll(() => env?.close());

const deps = (log = silentLog) => ({
  config: env.config,
  db: env.db,
  redis: env.redis,
  queues: env.queues,
  storage: env.storage,
  registry: env.registry,
  log,
});
const reconcile = (graceMs = 0, since?: Date) => reconcileOnce(deps(), graceMs, since);

/** A logger whose lines a test reads: what operators see of the reconciler's repairs. */
function capturedLog() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { log, lines };
}

/** A live ledger row of the `test` type (or another), queued in BullMQ unless `enqueued` is false. */
async function job(
  opts: { type?: string; state?: 'queued' | 'running'; enqueued?: boolean; callback_url?: string } = {},
): Promise<JobRow> {
  const [row] = await ledger.insertJobs(env.db, [
    {
      id: newId(),
      tenant,
      type: opts.type ?? 'test',
      state: opts.state ?? 'queued',
      priority: 'normal',
      payload: JSON.stringify({}),
      max_attempts: 1,
      callback_url: opts.callback_url,
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
/** reconciler_repairs_total by action, as /metrics shows it. */
const repairs = async (action: string) =>
  (await reconcilerRepairs.get()).values.find((v) => v.labels.action === action)?.value ?? 0;
const repairsSoFar = async () => ({ requeued: await repairs('requeued'), settled: await repairs('settled') });

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

  it("leaves an older generation's finished job that a worker holds (locked) for a later pass", async () => {
    const row = await job({ state: 'running' });
    await env.db.updateTable('jobs').set({ generation: 1 }).where('id', '=', row.id).execute();
    await finishInBull(row, { returnvalue: '1' }, 0);
    await env.redis.set(`${hashKey(row)}:lock`, 'a-worker');
    try {
      const r = await reconcile();
      expect(r.requeued).not.toContain(row.id);
      expect(r.settled).not.toContain(row.id);
      expect(await stored(row)).toMatchObject({ state: 'running', generation: 1 });
    } finally {
      await env.redis.del(`${hashKey(row)}:lock`);
    }
    expect((await reconcile()).requeued).toContain(row.id);
    expect(await stored(row)).toMatchObject({ generation: 2 });
  });

  it('fails the pass on a job it cannot read in Redis, rather than taking the job for missing', async () => {
    const row = await job({ enqueued: false });
    await env.redis.set(hashKey(row), 'not a job hash');
    try {
      await expect(reconcile()).rejects.toThrow(/WRONGTYPE/);
      expect(await stored(row)).toMatchObject({ generation: 0 });
    } finally {
      await env.redis.del(hashKey(row));
    }
    // Readable again (gone): missing, so queued again.
    expect((await reconcile()).requeued).toContain(row.id);
  });

  it('reports and publishes nothing for a job whose worker wrote its end while the pass was settling it', async () => {
    const row = await job({ state: 'running' });
    await finishInBull(row, { returnvalue: '1' });
    const { log, lines } = capturedLog();
    let pass: ReturnType<typeof reconcileOnce> | undefined;
    // The worker's late write holds the row until it commits; the pass read the row as running before that.
    await env.db.transaction().execute(async (trx) => {
      await ledger.markSucceededMany(trx, [{ id: row.id, gen: 0, result: 'by the worker' }]);
      pass = reconcileOnce(deps(log), 0);
      await waitFor(async () => {
        const { rows } = await sql<{ n: number }>`
          select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'`.execute(env.db);
        return rows[0].n > 0;
      });
    });
    const r = await pass!;
    expect(r.settled).not.toContain(row.id);
    expect(await stored(row)).toMatchObject({ state: 'succeeded', result: 'by the worker' });
    expect(lines.filter((l) => l.job_id === row.id)).toEqual([]);
  });

  it("queues the settled job's webhook, and tells operators which job it repaired", async () => {
    const { log, lines } = capturedLog();
    const row = await job({ state: 'running', callback_url: 'https://example.com/hook' });
    await finishInBull(row, { failedReason: 'bad_input: the frame is empty' });
    expect((await reconcileOnce(deps(log), 0)).settled).toEqual([row.id]);
    const done = await stored(row);
    expect(done).toMatchObject({ state: 'failed' });
    const hook = await env.queues.get(WEBHOOK_QUEUE).getJob(messageId(done!));
    expect(hook?.data).toMatchObject({ job_id: row.id, state: 'failed' });
    expect(lines.filter((l) => l.job_id === row.id)).toEqual([
      expect.objectContaining({
        level: 40,
        type: 'test',
        state: 'failed',
        msg: 'reconciler: the ledger missed the end of this job; it now says what BullMQ recorded',
      }),
    ]);
  });

  it('pages through more live rows than one batch holds (1000)', async () => {
    // A type this process does not know: counted as checked, left alone, and cheap to have many of.
    const many = await ledger.insertJobs(
      env.db,
      Array.from({ length: 1001 }, () => ({
        id: newId(),
        tenant,
        type: 'no-such-type',
        state: 'queued' as const,
        priority: 'normal' as const,
        payload: '{}',
        max_attempts: 1,
      })),
    );
    try {
      const lost = await job({ enqueued: false });
      const live = await env.db
        .selectFrom('jobs')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('state', 'in', ledger.LIVE)
        .executeTakeFirstOrThrow();
      const r = await reconcile();
      expect(r.checked).toBe(Number(live.n));
      expect(r.requeued).toContain(lost.id);
    } finally {
      await env.db
        .updateTable('jobs')
        .set({ state: 'cancelled' })
        .where(
          'id',
          'in',
          many.map((m) => m.id),
        )
        .execute();
    }
  });
});

describe('startReconciler', () => {
  it('runs passes while no other process holds the lock, releases it, and keeps the horizon for incremental passes', async () => {
    const { reconcilerLock, reconcilerHorizon } = keys(env.config);
    await env.redis.del(reconcilerHorizon);
    await env.redis.set(reconcilerLock, 'another-process');
    const lost = await job({ enqueued: false });
    const { log, lines } = capturedLog();
    const before = await repairsSoFar();
    const r = startReconciler(deps(log));
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
      // The full scan repaired it and said so: a count in the metrics, a line in the log.
      expect(await repairs('requeued')).toBe(before.requeued + 1);
      const requeuedLines = lines.filter((l) => l.msg === 'reconciler re-enqueued jobs missing from Redis');
      expect(requeuedLines).toEqual([expect.objectContaining({ level: 40, requeued: 1, full: true })]);
      expect(requeuedLines[0].checked).toBeGreaterThanOrEqual(1);
    } finally {
      await r.stop();
    }
    expect(await env.redis.get(reconcilerLock)).toBeNull();
  });

  it('finds in an incremental pass what was lost or finished since the horizon, and counts each repair', async () => {
    const { reconcilerHorizon } = keys(env.config);
    // As a full scan a while ago would have left it, its expiry (the next full scan) 5 minutes away.
    await env.redis.set(reconcilerHorizon, Date.now() - 1_000, 'PX', 5 * 60_000);
    const lost = await job({ enqueued: false });
    const finished = await job({ state: 'running' });
    await finishInBull(finished, { returnvalue: '1' });
    const { log, lines } = capturedLog();
    const before = await repairsSoFar();
    const r = startReconciler(deps(log));
    try {
      await waitFor(async () => (await stored(lost))?.generation === 1);
      await waitFor(async () => (await stored(finished))?.state === 'succeeded');
    } finally {
      await r.stop();
    }
    expect(await repairs('requeued')).toBe(before.requeued + 1);
    expect(await repairs('settled')).toBe(before.settled + 1);
    expect(lines.filter((l) => l.msg === 'reconciler re-enqueued jobs missing from Redis')).toEqual([
      expect.objectContaining({ level: 40, requeued: 1, full: false }),
    ]);
    // Incremental passes moved the horizon on but kept its expiry: the full scan still comes when it was due.
    expect(Number(await env.redis.get(reconcilerHorizon))).toBeGreaterThan(Date.now() - 60_000);
    expect(await env.redis.pttl(reconcilerHorizon)).toBeLessThanOrEqual(5 * 60_000);
  });

  it('logs a pass that fails, releases its lock, and goes on with the next', async () => {
    const { reconcilerLock } = keys(env.config);
    const { log, lines } = capturedLog();
    const row = await job({ enqueued: false });
    await env.redis.set(hashKey(row), 'not a job hash');
    const r = startReconciler(deps(log));
    try {
      await waitFor(() => lines.some((l) => l.msg === 'reconciler pass failed'));
      expect(lines.find((l) => l.msg === 'reconciler pass failed')).toMatchObject({
        level: 50,
        err: { message: expect.stringMatching(/WRONGTYPE/) },
      });
      await env.redis.del(hashKey(row));
      await waitFor(async () => (await stored(row))?.generation === 1);
    } finally {
      await r.stop();
    }
    expect(await env.redis.get(reconcilerLock)).toBeNull();
    // Stopped: no pass runs any more (each would write the horizon).
    await env.redis.del(keys(env.config).reconcilerHorizon);
    await new Promise((resolve) => setTimeout(resolve, env.config.RECONCILE_INTERVAL_MS * 3));
    expect(await env.redis.get(keys(env.config).reconcilerHorizon)).toBeNull();
  });
});
