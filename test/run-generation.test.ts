// The run identity (jobs.generation) under the races a review found: a retry racing the failure it reacts to, a
// cancel then a retry while a worker holds the job, "stalled" in an error message, a cancel whose message was missed.
// Real Redis and PostgreSQL; the in-process workers reach them through TCP gates (test/support/tcp-gate.ts) so a test
// can hold a worker exactly between its ledger write and its BullMQ call.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { createDb, type Db } from '../src/db/index.js';
import * as ledger from '../src/db/jobs.js';
import { enqueue } from '../src/jobs/enqueue.js';
import { bullPrefix, keys } from '../src/queues/keys.js';
import { createRedis } from '../src/queues/redis.js';
import { reconcileOnce } from '../src/workers/reconciler.js';
import { startWorkers } from '../src/workers/runtime.js';
import { newId } from '../src/ids.js';
import { client, createTestEnv, jobInState, silentLog, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';
import { tcpGate, type TcpGate } from './support/tcp-gate.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
let tenant: string;
let redisGate: TcpGate;
let pgGate: TcpGate;
let gatedDb: Db;
let stopWorkers: () => Promise<void>;
const markers = mkdtempSync(path.join(os.tmpdir(), 'run-generation-'));

beforeAll(async () => {
  // A long lock: a held gate also holds lock renewals, and no lock may lapse while a test holds one.
  env = await createTestEnv('run-generation', { env: { WORKER_LOCK_MS: '30000' } });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
  const redisUrl = new URL(env.config.REDIS_URL);
  const pgUrl = new URL(env.config.DATABASE_URL);
  redisGate = await tcpGate({ host: redisUrl.hostname, port: Number(redisUrl.port || 6379) });
  pgGate = await tcpGate({ host: pgUrl.hostname, port: Number(pgUrl.port || 5432) });
  redisUrl.port = String(redisGate.port);
  pgUrl.port = String(pgGate.port);
  // The workers' BullMQ connections and their ledger go through the gates; their event publishing does not.
  const config = loadConfig({ ...env.env, REDIS_URL: redisUrl.toString(), DATABASE_URL: pgUrl.toString() });
  gatedDb = createDb(config.DATABASE_URL, 5);
  const running = await startWorkers({ ...depsOf(env), config, db: gatedDb }, ['serial', 'test']);
  stopWorkers = () => running.close(1_000);
});

afterAll(async () => {
  redisGate?.release();
  pgGate?.release();
  await stopWorkers?.();
  await gatedDb?.destroy();
  await redisGate?.close();
  await pgGate?.close();
  await env?.close();
});

function depsOf(e: TestEnv) {
  return {
    config: e.config,
    db: e.db,
    redis: e.redis,
    queues: e.queues,
    storage: e.storage,
    registry: e.registry,
    log: silentLog,
  };
}

const until = (id: string, states: string[]) => jobInState(api, id, states);
const bullState = (type: string, id: string) => env.queues.get(type).getJobState(id);
const reconcile = () => reconcileOnce(depsOf(env), 0);

/** The job's state events as they are published, in order. */
async function watchStates(id: string) {
  const sub = createRedis(env.config, 'subscriber') as Redis;
  const states: string[] = [];
  const waiters: { state: string; resolve: () => void }[] = [];
  sub.on('message', (_channel: string, message: string) => {
    const e = JSON.parse(message) as { event: string; job: { id: string; state: string } };
    if (e.event !== 'state' || e.job.id !== id) return;
    states.push(e.job.state);
    for (const w of waiters.filter((x) => x.state === e.job.state)) w.resolve();
  });
  await sub.subscribe(keys(env.config).events);
  return {
    states,
    next: (state: string) =>
      new Promise<void>((resolve) => (states.includes(state) ? resolve() : waiters.push({ state, resolve }))),
    close: () => sub.disconnect(),
  };
}

describe('run generation: a retry cannot be undone', () => {
  it('the undone retry: a retry reacting to the failure event while the run still holds its BullMQ lock is refused (409), and a later retry runs', async () => {
    const dir = mkdtempSync(path.join(markers, 'undone-'));
    const r = await api('POST', '/v1/jobs', {
      type: 'serial',
      payload: { value: 'again', sleep_ms: 800, fail_once_marker: dir },
    });
    const events = await watchStates(r.body.id);
    await until(r.body.id, ['running']);
    // The run goes on; its BullMQ calls (the move to failed after the ledger write) wait at the gate.
    redisGate.hold();
    await events.next('failed');
    // The client reacts to the event at once: the worker has written `failed` but not yet told BullMQ.
    const retry = await api('POST', `/v1/jobs/${r.body.id}/retry`);
    await redisGate.waitForHeld('failedReason');
    redisGate.release();
    await waitFor(async () => (await bullState('serial', r.body.id)) === 'failed', { what: 'BullMQ to fail the run' });
    // The worker's failed handler and the reconciler have now seen BullMQ's outcome of the first run.
    await reconcile();
    const after = await ledger.findJob(env.db, r.body.id);
    events.close();
    expect({ status: retry.status, state: after!.state }).toEqual({ status: 409, state: 'failed' });
    expect(retry.headers.get('content-type')).toContain('application/problem+json');
    expect(after!.generation).toBe(0);

    // Once BullMQ has the outcome, the retry goes through as generation 1 and runs.
    const again = await api('POST', `/v1/jobs/${r.body.id}/retry`);
    expect(again.status).toBe(202);
    const done = await until(r.body.id, ['succeeded', 'failed']);
    expect(done).toMatchObject({ state: 'succeeded', attempts: 1, result: { echo: 'again' } });
    expect((await ledger.findJob(env.db, r.body.id))!.generation).toBe(1);
  });

  it('cancel then retry in the window: a job cancelled as a worker fetched it, retried before BullMQ heard the skip, does not end succeeded with a null result', async () => {
    // The worker fetches the job; its start write waits at the database gate.
    pgGate.hold();
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: { value: 'real result' } });
    // The start write (ledger startRuns) is the one statement that counts an attempt.
    await pgGate.waitForHeld('attempts + 1');
    const cancel = await api('POST', `/v1/jobs/${r.body.id}/cancel`);
    expect(cancel.body.state).toBe('cancelled');
    // The worker finds the row cancelled and skips it; its report to BullMQ waits at the Redis gate.
    redisGate.hold();
    pgGate.release();
    await redisGate.waitForHeld('returnvalue');
    const retry = await api('POST', `/v1/jobs/${r.body.id}/retry`);
    redisGate.release();
    await waitFor(async () => (await bullState('serial', r.body.id)) === 'completed', { what: 'BullMQ to complete' });
    await reconcile();
    const after = await ledger.findJob(env.db, r.body.id);
    expect({ status: retry.status, state: after!.state, result: after!.result }).toEqual({
      status: 409,
      state: 'cancelled',
      result: null,
    });

    const again = await api('POST', `/v1/jobs/${r.body.id}/retry`);
    expect(again.status).toBe(202);
    const done = await until(r.body.id, ['succeeded', 'failed', 'cancelled']);
    expect(done).toMatchObject({ state: 'succeeded', result: { echo: 'real result' } });
  });

  it('retry 409 when removal is impossible: a failed job whose BullMQ job a worker still holds is left as it is', async () => {
    // An email job no worker of this file serves, failed in the ledger while a worker (this test) holds it in BullMQ.
    const [row] = await ledger.insertJobs(env.db, [
      {
        id: newId(),
        tenant,
        type: 'email',
        state: 'queued',
        priority: 'normal',
        payload: JSON.stringify({}),
        max_attempts: 1,
      },
    ]);
    await enqueue(env.queues, env.registry, [row]);
    const holder = new Worker('email', null, {
      connection: createRedis(env.config, 'worker'),
      prefix: bullPrefix(env.config, 'email'),
      lockDuration: 30_000,
    });
    try {
      const job = await holder.getNextJob('holder-token');
      expect(job?.id).toBe(row.id);
      // What the holder's runtime writes before it tells BullMQ.
      await env.db
        .updateTable('jobs')
        .set({ state: 'failed', error: JSON.stringify({ code: 'processor_error', message: 'boom' }) })
        .where('id', '=', row.id)
        .execute();

      const refused = await api('POST', `/v1/jobs/${row.id}/retry`);
      expect(refused.status).toBe(409);
      expect(refused.headers.get('content-type')).toContain('application/problem+json');
      expect(refused.body).toMatchObject({ status: 409, state: 'failed' });
      expect(await ledger.findJob(env.db, row.id)).toMatchObject({ state: 'failed', generation: 0 });
      expect(await bullState('email', row.id)).toBe('active');

      // The holder reports the failure: the id is free, and the retry is accepted as a new generation.
      await job!.moveToFailed(new Error('boom'), 'holder-token', false);
      const accepted = await api('POST', `/v1/jobs/${row.id}/retry`);
      expect(accepted.status).toBe(202);
      expect(await ledger.findJob(env.db, row.id)).toMatchObject({ state: 'queued', generation: 1 });
      expect((await env.queues.get('email').getJob(row.id))?.data).toEqual({ tenant, gen: 1 });
    } finally {
      await holder.close(true);
    }
  });
});

describe('run generation: the reconciler', () => {
  it('replaces a finished BullMQ job of an older generation, which would otherwise hold the id, with the current one', async () => {
    // An image job (no worker of this file serves images). The ledger says generation 1 (queued again), but the BullMQ job under the id is generation 0's, finished: the
    // current generation's add was a no-op.
    const [row] = await ledger.insertJobs(env.db, [
      {
        id: newId(),
        tenant,
        type: 'image',
        state: 'queued',
        priority: 'normal',
        payload: JSON.stringify({}),
        max_attempts: 1,
      },
    ]);
    await enqueue(env.queues, env.registry, [row]);
    const holder = new Worker('image', null, {
      connection: createRedis(env.config, 'worker'),
      prefix: bullPrefix(env.config, 'image'),
    });
    try {
      const job = await holder.getNextJob('holder-token');
      expect(job?.id).toBe(row.id);
      await job!.moveToCompleted('old', 'holder-token', false);
    } finally {
      await holder.close(true);
    }
    await env.db.updateTable('jobs').set({ generation: 1 }).where('id', '=', row.id).execute();

    const r = await reconcile();
    expect(r.settled).not.toContain(row.id);
    expect(r.requeued).toContain(row.id);
    expect(await ledger.findJob(env.db, row.id)).toMatchObject({ state: 'queued', result: null, generation: 2 });
    expect((await env.queues.get('image').getJob(row.id))?.data).toEqual({ tenant, gen: 2 });
    expect(['waiting', 'prioritized']).toContain(await bullState('image', row.id));
  });
});

describe('run generation: failures and cancels', () => {
  it('"stalled" in an error message: a retryable failure whose message says stalled is retried, not made final', async () => {
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { value: 'smtp', fail_times: 1, fail_message: '451 4.4.2 connection stalled, try again later' },
    });
    const done = await until(r.body.id, ['succeeded', 'failed']);
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2, result: { echo: 'smtp' } });
  });

  it('a run that failed after a newer run of its generation started (its lock lapsed unheard) leaves that run’s row alone', async () => {
    // email-lock-lapse.test.ts: a run whose lock lapsed without its worker hearing of it failed after the run that
    // BullMQ handed the job to had started, and set that run's row back to delayed; the newer run then stopped as
    // superseded and the job ended failed. Here the newer run's start is the ledger write another worker makes.
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 'v', sleep_ms: 1500, fail_times: 1 } });
    const events = await watchStates(r.body.id);
    await until(r.body.id, ['running']);
    const { generation } = (await ledger.findJob(env.db, r.body.id))!;
    const [newer] = await ledger.markRunningMany(env.db, [{ id: r.body.id, gen: generation }]);
    expect(newer).toMatchObject({ state: 'running', attempts: 2 });
    await waitFor(async () => (await bullState('test', r.body.id)) !== 'active', { what: 'the first run to fail' });
    const row = await ledger.findJob(env.db, r.body.id);
    events.close();
    expect(events.states).not.toContain('delayed');
    expect(row!.error).toBeNull();
  });

  it('missed cancel message, at a progress write: a running job whose cancel was committed ends cancelled', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: { progress_steps: 20, sleep_ms: 4000 } });
    await until(r.body.id, ['running']);
    // The ledger half of the API's cancel, without the message (as if this worker's subscriber missed it).
    expect(await ledger.requestCancel(env.db, r.body.id)).toBeDefined();
    const done = await until(r.body.id, ['succeeded', 'failed', 'cancelled']);
    expect(done.state).toBe('cancelled');
    expect(done.result).toBeNull();
    expect(done.progress).toBeLessThan(100);
  });

  it('missed cancel message, at the end: a job that never reports progress ends cancelled, not succeeded', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: { value: 'x', sleep_ms: 1500 } });
    await until(r.body.id, ['running']);
    expect(await ledger.requestCancel(env.db, r.body.id)).toBeDefined();
    const done = await until(r.body.id, ['succeeded', 'failed', 'cancelled']);
    expect(done).toMatchObject({ state: 'cancelled', result: null });
  });

  it('retry of a cancelled delayed job keeps its run_at while it is in the future', async () => {
    const runAt = new Date(Date.now() + 3_600_000).toISOString();
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: {}, run_at: runAt });
    expect(r.body.state).toBe('delayed');
    expect((await api('POST', `/v1/jobs/${r.body.id}/cancel`)).body.state).toBe('cancelled');
    const retry = await api('POST', `/v1/jobs/${r.body.id}/retry`);
    expect(retry.status).toBe(202);
    expect(retry.body).toMatchObject({ state: 'delayed', run_at: new Date(runAt).toISOString() });
    // A job due later waits in the ledger, not in BullMQ, until its run_at: admission hands it over then.
    expect(await ledger.findJob(env.db, r.body.id)).toMatchObject({ state: 'delayed', admitted_at: null });
    expect(await bullState('serial', r.body.id)).toBe('unknown');
  });
});
