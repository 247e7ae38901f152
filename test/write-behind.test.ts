// The write-behind ledger against a real worker process: BullMQ records a run's end at once and the ledger's finish
// follows; a worker SIGKILLed between the two loses nothing, because BullMQ keeps the completed job (with its result)
// until long after the commit and the reconciler writes that very result to the ledger.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ledger from '../src/db/jobs.js';
import { readJobEvents } from '../src/events.js';
import { reconcileOnce } from '../src/workers/reconciler.js';
import {
  client,
  createTestEnv,
  silentLog,
  startProcess,
  tenantWithKeys,
  TEST_JOBS,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
const procs: Proc[] = [];

beforeAll(async () => {
  // Admission off: these tests hold ledger finishes back on purpose, and with admission on a tenant's window frees
  // only when its finishes commit, so 1,100 jobs would never all reach BullMQ.
  env = await createTestEnv('write_behind', {
    env: { JOB_MODULES: `${TEST_JOBS},test/fixtures/behind-jobs.ts`, ADMISSION: 'off' },
  });
  api = client(env.app, (await tenantWithKeys(env)).clientKey);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.close();
});

/**
 * A worker whose finishes wait ten minutes before their ledger write: the window between BullMQ's finish and the
 * ledger's commit, held open. Its own reconciler looks only at rows older than that, so it settles nothing meanwhile.
 */
async function behindWorker(queues: string) {
  const p = await startProcess('worker', env.env, {
    QUEUES: queues,
    WORKER_CONCURRENCY: 'test=32',
    LEDGER_WRITE_BEHIND_MS: '600000',
    RECONCILE_GRACE_MS: '600000',
  });
  procs.push(p);
  return p;
}

const deps = () => ({ ...env, log: silentLog });

describe('write-behind ledger', () => {
  it('a worker SIGKILLed after BullMQ recorded the end, before the ledger commit: the reconciler writes the real result', {
    timeout: 120_000,
  }, async () => {
    const worker = await behindWorker('test');
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 'kept in Redis' } });
    expect(r.status).toBe(202);
    const id: string = r.body.id;
    const queue = env.queues.get('test');
    await waitFor(async () => (await queue.getJob(id))?.finishedOn, { what: 'BullMQ to record the end' });

    // BullMQ holds the completed run and its return value; the ledger is behind: the start is in, the finish is not.
    const bull = await queue.getJob(id);
    expect(await bull!.getState()).toBe('completed');
    expect(bull!.returnvalue).toEqual({ echo: 'kept in Redis', attempt: 1, pid: worker.child.pid });
    expect(await ledger.findJob(env.db, id)).toMatchObject({ state: 'running', attempts: 1, result: null });

    await worker.stop('SIGKILL');
    // Nothing of the finish reached the ledger before the kill.
    expect((await ledger.findJob(env.db, id))!.state).toBe('running');

    const pass = await reconcileOnce(deps(), 0);
    expect(pass.settled).toEqual([id]);
    expect(pass.requeued).toEqual([]);
    // The result of the run that was killed (its pid), not of a second run: the job ran once.
    const row = await ledger.findJob(env.db, id);
    expect(row).toMatchObject({
      state: 'succeeded',
      attempts: 1,
      progress: 100,
      result: { echo: 'kept in Redis', attempt: 1, pid: worker.child.pid },
    });
    expect(row!.finished_at).not.toBeNull();
    // A second pass finds nothing left to do.
    expect((await reconcileOnce(deps(), 0)).settled).toEqual([]);
  });

  it('BullMQ keeps a completed job while its ledger finish is behind, however many complete after it', {
    timeout: 180_000,
  }, async () => {
    const worker = await behindWorker('test');
    const first = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 'first' } });
    const queue = env.queues.get('test');
    await waitFor(async () => (await queue.getJob(first.body.id))?.finishedOn, { what: 'the first job to complete' });
    // More completions in the same queue than a count-based retention (the former `removeOnComplete.count`, 1,000)
    // would keep.
    for (let i = 0; i < 2; i++) {
      const bulk = await api('POST', '/v1/jobs/bulk', {
        jobs: Array.from({ length: 550 }, (_, k) => ({ type: 'test', payload: { value: k } })),
      });
      expect(bulk.status).toBe(202);
    }
    await waitFor(async () => (await queue.getJobCounts('completed', 'active', 'wait')).wait === 0, {
      timeout: 150_000,
      what: '1,100 more jobs to complete in BullMQ',
    });
    await waitFor(async () => (await queue.getJobCounts('active')).active === 0, { what: 'the last runs to end' });
    // Still behind in the ledger, still whole in BullMQ.
    expect((await ledger.findJob(env.db, first.body.id))!.state).toBe('running');
    const kept = await queue.getJob(first.body.id);
    expect(kept?.returnvalue).toMatchObject({ echo: 'first' });

    // A graceful stop commits every finish held back before the process exits.
    expect(await worker.stop('SIGTERM')).toBe(0);
    expect(await ledger.findJob(env.db, first.body.id)).toMatchObject({
      state: 'succeeded',
      result: { echo: 'first' },
    });
    const left = await env.db
      .selectFrom('jobs')
      .select((e) => e.fn.countAll<string>().as('n'))
      .where('state', '!=', 'succeeded')
      .executeTakeFirstOrThrow();
    expect(Number(left.n)).toBe(0);
  });

  it('a type whose runs start behind the ledger: BullMQ carries its payload, and the ledger counts the run, in order', async () => {
    const running = await env.startWorkers(['quick']);
    try {
      const r = await api('POST', '/v1/jobs', { type: 'quick', payload: { value: 'q', progress: true } });
      expect(r.status).toBe(202);
      const id: string = r.body.id;
      expect((await env.queues.get('quick').getJob(id))!.data).toMatchObject({
        payload: { value: 'q', progress: true },
      });
      await waitFor(async () => (await ledger.findJob(env.db, id))?.state === 'succeeded', {
        what: 'quick job to end',
      });
      expect(await ledger.findJob(env.db, id)).toMatchObject({
        attempts: 1,
        progress: 100,
        result: { echo: 'q', attempt: 1, pid: process.pid },
      });
      // The events a client replays: the start, its progress (which waited for the start's commit), the end.
      const events = await readJobEvents(env.redis, env.config, id, '0');
      expect(events.map((e) => [e.event, e.job.state])).toEqual([
        ['state', 'running'],
        ['progress', 'running'],
        ['state', 'succeeded'],
      ]);
    } finally {
      await running.close(5_000);
    }
  });

  it('a run that starts behind the ledger on a row the ledger would not start (cancelled) writes nothing', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'quick', payload: { value: 'too late' } });
    const id: string = r.body.id;
    // Cancelled after its enqueue, before any worker took it: the run goes ahead, its start and finish are fenced out.
    await env.db.updateTable('jobs').set({ state: 'cancelled' }).where('id', '=', id).execute();
    const running = await env.startWorkers(['quick']);
    try {
      await waitFor(async () => (await env.queues.get('quick').getJob(id))?.finishedOn, { what: 'the run to end' });
      // The finish commits after BullMQ's record: wait until nothing is left behind (a graceful close drains it).
      await running.close(5_000);
      expect(await ledger.findJob(env.db, id)).toMatchObject({ state: 'cancelled', attempts: 0, result: null });
    } finally {
      await running.close(5_000);
    }
  });

  it('a short run that starts behind the ledger writes start and end as one; killed before it, the reconciler counts the run', {
    timeout: 120_000,
  }, async () => {
    const worker = await behindWorker('quick');
    const r = await api('POST', '/v1/jobs', { type: 'quick', payload: { value: 'settled' } });
    const id: string = r.body.id;
    await waitFor(async () => (await env.queues.get('quick').getJob(id))?.finishedOn, {
      what: 'BullMQ to record the end',
    });
    // Neither its start nor its end is in the ledger: the run ended before its start went out, and its one write is
    // held back.
    expect(await ledger.findJob(env.db, id)).toMatchObject({ state: 'queued', attempts: 0, started_at: null });
    await worker.stop('SIGKILL');
    expect((await reconcileOnce(deps(), 0)).settled).toEqual([id]);
    const row = await ledger.findJob(env.db, id);
    expect(row).toMatchObject({
      state: 'succeeded',
      attempts: 1,
      result: { echo: 'settled', attempt: 1, pid: worker.child.pid },
    });
    expect(row!.started_at).not.toBeNull();
  });
});
