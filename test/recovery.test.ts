// Nothing accepted is lost: a worker killed mid-job, an enqueue that never happened, a wiped Redis.
// Uses a private redis-server so FLUSHALL touches nobody else.
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ledger from '../src/db/jobs.js';
import { reconcileOnce } from '../src/workers/reconciler.js';
import {
  client,
  createTestEnv,
  silentLog,
  startProcess,
  tenantWithKeys,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';
import { privateRedis, type PrivateRedis } from './support/private-redis.js';

let redis: PrivateRedis;
let env: TestEnv;
let api: ReturnType<typeof client>;
let tenant: string;
const procs: Proc[] = [];
const markers = mkdtempSync(path.join(os.tmpdir(), 'recovery-'));

beforeAll(async () => {
  redis = await privateRedis();
  env = await createTestEnv('recovery', { env: { REDIS_URL: redis.url, WORKER_LOCK_MS: '2000' } });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.close();
  await redis?.stop();
});

async function worker() {
  const p = await startProcess('worker', env.env);
  procs.push(p);
  return p;
}

const state = async (id: string) => (await ledger.findJob(env.db, id))?.state;
const until = (id: string, s: string, timeout = 30_000) =>
  waitFor(async () => (await state(id)) === s, { timeout, what: `job ${id} ${s}` });

describe('recovery', () => {
  it('finishes a job whose worker was SIGKILLed mid-run, exactly once', async () => {
    const a = await worker();
    const dir = mkdtempSync(path.join(markers, 'kill-'));
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: 1500, marker: dir } });
    expect(r.status).toBe(202);
    await until(r.body.id, 'running');
    await a.stop('SIGKILL');
    await worker();
    await until(r.body.id, 'succeeded');
    const row = await ledger.findJob(env.db, r.body.id);
    expect(row!.attempts).toBe(2); // two runs started; only the second finished
    expect(
      readFileSync(path.join(dir, `${r.body.id}.done`), 'utf8')
        .trim()
        .split('\n'),
    ).toHaveLength(1);
  });

  it('runs a committed job whose enqueue never happened (the API died between the two writes)', async () => {
    // The ledger row alone, exactly as the API commits it before enqueueing.
    const [row] = await ledger.insertJobs(env.db, [
      {
        id: uuidv7(),
        tenant,
        type: 'test',
        state: 'queued',
        priority: 'normal',
        payload: JSON.stringify({ value: 'orphan' }),
        max_attempts: 3,
      },
    ]);
    await until(row.id, 'succeeded');
    expect((await ledger.findJob(env.db, row.id))!.result).toMatchObject({ echo: 'orphan' });
  });

  it('runs every queued, delayed and running job after Redis is wiped', async () => {
    for (const p of procs.splice(0)) await p.stop('SIGTERM');
    const dir = mkdtempSync(path.join(markers, 'flush-'));
    const bulk = await api('POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 30 }, (_, i) => ({ type: 'test', payload: { value: i, marker: dir } })),
    });
    const delayed = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { marker: dir },
      run_at: new Date(Date.now() + 2000).toISOString(),
    });
    expect(bulk.status).toBe(202);
    await redis.flushall();
    await worker();
    const ids = [...bulk.body.jobs.map((j: { id: string }) => j.id), delayed.body.id];
    for (const id of ids) await until(id, 'succeeded');
    for (const id of ids) expect(readFileSync(path.join(dir, `${id}.done`), 'utf8')).toBe('1\n');
  });

  it('recovers a job that was running when Redis was wiped', async () => {
    const dir = mkdtempSync(path.join(markers, 'running-'));
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: 1000, marker: dir } });
    await until(r.body.id, 'running');
    await redis.flushall();
    await until(r.body.id, 'succeeded');
    // The interrupted run may finish too (at-least-once); the ledger still shows one success.
    expect((await ledger.findJob(env.db, r.body.id))!.state).toBe('succeeded');
  });

  it('settles jobs that BullMQ finished (succeeded, failed, cancelled) but whose last ledger write was lost', async () => {
    const running = await env.startWorkers(['test']);
    try {
      const ok = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 7 } });
      const bad = await api('POST', '/v1/jobs', { type: 'test', payload: { permanent: true } });
      const stopped = await api('POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: 10_000 } });
      await until(ok.body.id, 'succeeded');
      await until(bad.body.id, 'failed');
      await until(stopped.body.id, 'running');
      expect((await api('POST', `/v1/jobs/${stopped.body.id}/cancel`)).status).toBe(202);
      await until(stopped.body.id, 'cancelled');
      // BullMQ records the end just after the ledger does.
      const queue = env.queues.get('test');
      const ids = [ok.body.id, bad.body.id, stopped.body.id];
      for (const id of ids)
        await waitFor(async () => (await queue.getJob(id))?.finishedOn, { what: `BullMQ to finish ${id}` });
      const okResult = (await ledger.findJob(env.db, ok.body.id))!.result;
      // The lost write: the ledger still says running, long past the grace period.
      await env.db
        .updateTable('jobs')
        .set({
          state: 'running',
          result: null,
          error: null,
          finished_at: null,
          updated_at: new Date(Date.now() - 3_600_000),
        })
        .where('id', 'in', ids)
        .execute();
      const r = await reconcileOnce(
        {
          config: env.config,
          db: env.db,
          redis: env.redis,
          queues: env.queues,
          storage: env.storage,
          registry: env.registry,
          log: silentLog,
        },
        1_000,
      );
      expect(r.settled.sort()).toEqual([...ids].sort());
      expect(r.requeued).toEqual([]);
      const [okRow, badRow] = await Promise.all([
        ledger.findJob(env.db, ok.body.id),
        ledger.findJob(env.db, bad.body.id),
      ]);
      expect(okRow).toMatchObject({ state: 'succeeded', result: okResult });
      expect(okRow!.finished_at).toBeInstanceOf(Date);
      expect(badRow).toMatchObject({
        state: 'failed',
        error: { code: 'test_permanent', message: 'this payload can never succeed' },
      });
      expect((await ledger.findJob(env.db, stopped.body.id))?.state).toBe('cancelled');
      // A second pass has nothing to do.
      const again = await reconcileOnce(
        {
          config: env.config,
          db: env.db,
          redis: env.redis,
          queues: env.queues,
          storage: env.storage,
          registry: env.registry,
          log: silentLog,
        },
        1_000,
      );
      expect(again.settled).toEqual([]);
    } finally {
      await running.close(1_000);
    }
  });
});
