// Time limits and expiry (issue 19): a run past its time limit is aborted through its signal and fails with
// error.code "timeout" by its type's retry policy; a processor deaf to its signal is abandoned (its concurrency slot
// freed, the job queued again as a new generation) and its late finish changes nothing; a job not started by its
// expires_at ends cancelled with error.code "expired", whether a worker or the expiry sweep reaches it first, and its
// webhook says so. Real Redis and PostgreSQL, the in-process runtime at concurrency 1, a real webhook receiver.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ledger from '../src/db/jobs.js';
import type { NewJobRow } from '../src/db/types.js';
import { newId } from '../src/ids.js';
import { expireOnce, startExpirySweeper } from '../src/workers/expiry.js';
import type { RunningWorkers } from '../src/workers/runtime.js';
import { client, createTestEnv, jobInState, silentLog, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';
import { startReceiver, type Receiver } from './support/receiver.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
let rx: Receiver;
let running: RunningWorkers;
let tenant: string;
const markers = mkdtempSync(path.join(os.tmpdir(), 'time-limits-'));

beforeAll(async () => {
  env = await createTestEnv('time-limits', {
    env: {
      // One run at a time: a slot held by a deaf run would hold every other job.
      WORKER_CONCURRENCY: 'test=1',
      JOB_TIMEOUT_GRACE_MS: '300',
      EXPIRY_SWEEP_MS: '200',
      WEBHOOK_ALLOW_PRIVATE: 'true',
      WEBHOOK_BACKOFF_MS: '200',
    },
  });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
  rx = await startReceiver();
  // Only `test` is served: `serial` jobs wait in their queue for ever, as under a stopped worker type.
  running = await env.startWorkers(['test']);
});

afterAll(async () => {
  await rx?.close();
  await env?.close();
});

const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : []);
const generation = async (id: string) =>
  (await env.db.selectFrom('jobs').select('generation').where('id', '=', id).executeTakeFirstOrThrow()).generation;
const inFuture = (ms: number) => new Date(Date.now() + ms).toISOString();

describe('submit', () => {
  it('refuses a timeout_ms above the type maximum and an expires_at that is past or not after run_at: 422 with the path', async () => {
    const over = await api('POST', '/v1/jobs', { type: 'test', payload: {}, timeout_ms: 120_001 });
    expect(over.status).toBe(422);
    expect(over.headers.get('content-type')).toContain('application/problem+json');
    expect(over.body.errors).toEqual([{ path: 'timeout_ms', message: expect.stringContaining('at most 120000') }]);

    const past = await api('POST', '/v1/jobs', { type: 'test', payload: {}, expires_at: inFuture(-1000) });
    expect(past.status).toBe(422);
    expect(past.body.errors).toEqual([{ path: 'expires_at', message: 'must be in the future' }]);

    const beforeRun = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: inFuture(3_600_000),
      expires_at: inFuture(1_800_000),
    });
    expect(beforeRun.status).toBe(422);
    expect(beforeRun.body.errors).toEqual([{ path: 'expires_at', message: expect.stringContaining('after run_at') }]);

    // In a batch, each path names its job; the batch is refused whole.
    const batch = await api('POST', '/v1/jobs/bulk', {
      jobs: [
        { type: 'test', payload: {} },
        { type: 'test', payload: {}, timeout_ms: 10 ** 9 },
      ],
    });
    expect(batch.status).toBe(422);
    expect(batch.body.errors.map((e: { path: string }) => e.path)).toEqual(['jobs.1.timeout_ms']);

    // Not a positive integer: a malformed field, as for any other (400).
    expect((await api('POST', '/v1/jobs', { type: 'test', payload: {}, timeout_ms: 0 })).status).toBe(400);
    expect((await api('POST', '/v1/jobs', { type: 'test', payload: {}, expires_at: 'tomorrow' })).status).toBe(400);

    const { count } = await env.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<string>().as('count'))
      .executeTakeFirstOrThrow();
    expect(Number(count)).toBe(0);
  });

  it('stores and shows timeout_ms (the type default when not asked) and expires_at', async () => {
    const expires = inFuture(3_600_000);
    const asked = await api('POST', '/v1/jobs', {
      type: 'serial',
      payload: {},
      timeout_ms: 5_000,
      expires_at: expires,
    });
    expect(asked.status).toBe(202);
    expect(asked.body).toMatchObject({ timeout_ms: 5_000, expires_at: new Date(expires).toISOString() });
    const plain = await api('POST', '/v1/jobs', {
      type: 'email',
      payload: { to: 'a@example.com', template: 'welcome' },
    });
    expect(plain.status).toBe(202);
    // email's declared default (src/jobs/email/index.ts).
    expect(plain.body).toMatchObject({ timeout_ms: 300_000, expires_at: null });
    expect((await api('GET', `/v1/jobs/${asked.body.id}`)).body).toMatchObject({ timeout_ms: 5_000 });
    await env.db.deleteFrom('jobs').execute();
  });

  it('describes both fields in /openapi.json, on the submission and on the job', async () => {
    type Schema = { properties: Record<string, { description?: string }> };
    const doc = (await (await env.app.request('/openapi.json')).json()) as {
      components: { schemas: Record<string, Schema> };
    };
    const { JobSubmission, Job } = doc.components.schemas;
    for (const s of [JobSubmission, Job]) {
      expect(s.properties.timeout_ms.description).toContain('timeout');
      expect(s.properties.expires_at.description).toContain('expired');
    }
  });
});

describe('time limits', () => {
  it('a run past its time limit is aborted through its signal and fails with error.code timeout once its attempts are spent', async () => {
    const started = path.join(markers, 'honours');
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { sleep_ms: 60_000, started_marker: started },
      timeout_ms: 100,
    });
    expect(r.status).toBe(202);
    const gen = await generation(r.body.id);
    const done = await jobInState(api, r.body.id, ['succeeded', 'failed', 'cancelled'], 30_000);
    expect(done).toMatchObject({ state: 'failed', attempts: 3, result: null, error: { code: 'timeout' } });
    // Three runs (the type's attempts), each stopped through its signal: none was abandoned.
    expect(lines(path.join(started, `${r.body.id}.started`))).toEqual(['1', '2', '3']);
    expect(await generation(r.body.id)).toBe(gen);
  });

  it('a processor deaf to its signal is abandoned: its slot is freed, the job is retried, and its late finish changes nothing', async () => {
    const late = path.join(markers, 'late');
    const lateFile = (id: string) => path.join(late, `${id}.late`);
    const a = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { value: 'a', deaf_on_attempt: 1, deaf_ms: 10_000, late_marker: late },
      timeout_ms: 200,
    });
    const gen = await generation(a.body.id);
    await jobInState(api, a.body.id, ['running']);
    const b = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 'b' } });

    // On a worker of concurrency 1, B runs and A's second attempt succeeds while A's first run still sleeps.
    const doneB = await jobInState(api, b.body.id, ['succeeded', 'failed'], 30_000);
    const doneA = await jobInState(api, a.body.id, ['succeeded', 'failed'], 30_000);
    expect(lines(lateFile(a.body.id))).toEqual([]);
    expect(doneB).toMatchObject({ state: 'succeeded', result: { echo: 'b' } });
    expect(doneA).toMatchObject({ state: 'succeeded', attempts: 2, result: { echo: 'a', attempt: 2 }, error: null });
    // Abandoning queued it again as a new generation, which its second attempt ran as.
    expect(await generation(a.body.id)).toBe(gen + 1);

    // The deaf run wakes up, reports progress, logs and returns its result of attempt 1: none of it reaches the job.
    await waitFor(() => lines(lateFile(a.body.id)).length > 0, { timeout: 30_000, what: 'the deaf run to wake' });
    const c = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 'c' } });
    await jobInState(api, c.body.id, ['succeeded']);
    const after = (await api('GET', `/v1/jobs/${a.body.id}`)).body;
    expect(after).toMatchObject({ state: 'succeeded', attempts: 2, progress: 100, result: { echo: 'a', attempt: 2 } });
    expect(await generation(a.body.id)).toBe(gen + 1);
  });
});

describe('expiry', () => {
  it('the start write ends an expired row never started, in the same fenced statement as the starts and finishes beside it', async () => {
    const past = new Date(Date.now() - 60_000);
    const row = (over: Partial<NewJobRow> = {}): NewJobRow => ({
      id: newId(),
      tenant,
      type: 'serial',
      state: 'queued',
      priority: 'normal',
      payload: '{}',
      max_attempts: 3,
      ...over,
    });
    const [expired, fresh, wrongGen, retrying, finishing] = await ledger.insertJobs(env.db, [
      row({ expires_at: past }),
      row({ expires_at: new Date(Date.now() + 3_600_000) }),
      row({ expires_at: past }),
      row({ expires_at: past, state: 'delayed' }),
      row({ state: 'running' }),
    ]);
    // Started once already, waiting for its retry: it has started, so it does not expire.
    await env.db.updateTable('jobs').set({ started_at: past, attempts: 1 }).where('id', '=', retrying.id).execute();
    const runs = [expired, fresh, retrying].map((r) => ({ id: r.id, gen: r.generation }));
    const { running, succeeded } = await ledger.markRunningAndSucceededMany(
      env.db,
      [...runs, { id: wrongGen.id, gen: wrongGen.generation + 1 }],
      [{ id: finishing.id, gen: finishing.generation, result: { ok: true } }],
    );
    expect(running.map((r) => r && { state: r.state, attempts: r.attempts, code: r.error?.code ?? null })).toEqual([
      { state: 'cancelled', attempts: 0, code: 'expired' },
      { state: 'running', attempts: 1, code: null },
      { state: 'running', attempts: 2, code: null },
      undefined,
    ]);
    expect(running[0]).toMatchObject({ started_at: null, finished_at: expect.any(Date) });
    expect(succeeded[0]).toMatchObject({ state: 'succeeded', result: { ok: true } });
    // Fenced: a run of another generation changes nothing, expired or not.
    expect((await ledger.findJob(env.db, wrongGen.id))!.state).toBe('queued');
    await env.db
      .deleteFrom('jobs')
      .where(
        'id',
        'in',
        [expired, fresh, wrongGen, retrying, finishing].map((r) => r.id),
      )
      .execute();
  });

  it('the sweep ends a job never started by its expires_at: cancelled, error.code expired, gone from BullMQ, webhook says so', async () => {
    const started = path.join(markers, 'swept');
    // No worker serves `serial`: only the sweep can end it.
    const r = await api('POST', '/v1/jobs', {
      type: 'serial',
      payload: { started_marker: started },
      expires_at: inFuture(1_000),
      callback_url: `${rx.url}/swept`,
    });
    expect(r.status).toBe(202);
    expect(await env.queues.get('serial').getJob(r.body.id)).toBeDefined();
    const sweeper = startExpirySweeper({
      config: env.config,
      db: env.db,
      redis: env.redis,
      queues: env.queues,
      storage: env.storage,
      registry: env.registry,
      log: silentLog,
    });
    try {
      const done = await jobInState(api, r.body.id, ['cancelled', 'failed', 'succeeded'], 20_000);
      expect(done).toMatchObject({ state: 'cancelled', attempts: 0, started_at: null, error: { code: 'expired' } });
    } finally {
      await sweeper.stop();
    }
    expect(await env.queues.get('serial').getJob(r.body.id)).toBeUndefined();
    expect(existsSync(started)).toBe(false);
    const hook = await waitFor(() => rx.received.find((x) => x.path === '/swept'), { what: 'the webhook' });
    expect(JSON.parse(hook.body)).toMatchObject({
      type: 'job.cancelled',
      data: { id: r.body.id, state: 'cancelled', error: { code: 'expired' } },
    });
  });

  it('two sweeps at once end each overdue job once, and leave jobs that started or have time left', async () => {
    const past = new Date(Date.now() - 60_000);
    const row = (over: Partial<NewJobRow> = {}): NewJobRow => ({
      id: newId(),
      tenant,
      type: 'serial',
      state: 'queued',
      priority: 'normal',
      payload: '{}',
      max_attempts: 1,
      expires_at: past,
      ...over,
    });
    const overdue = await ledger.insertJobs(
      env.db,
      Array.from({ length: 60 }, (_, i) => row({ state: i % 2 ? 'queued' : 'delayed' })),
    );
    const [later, started] = await ledger.insertJobs(env.db, [
      row({ expires_at: new Date(Date.now() + 3_600_000) }),
      row({ state: 'delayed' }),
    ]);
    await env.db.updateTable('jobs').set({ started_at: past }).where('id', '=', started.id).execute();
    const deps = {
      config: env.config,
      db: env.db,
      redis: env.redis,
      queues: env.queues,
      storage: env.storage,
      registry: env.registry,
      log: silentLog,
    };
    const [a, b] = await Promise.all([expireOnce(deps), expireOnce(deps)]);
    const ended = [...a, ...b].map((r) => r.id);
    expect(ended.sort()).toEqual(overdue.map((r) => r.id).sort());
    expect(new Set(ended).size).toBe(ended.length);
    expect((await ledger.findJob(env.db, later.id))!.state).toBe('queued');
    expect((await ledger.findJob(env.db, started.id))!.state).toBe('delayed');
  });

  it('a worker that reaches an expired job first does not run it: it ends cancelled with error.code expired', async () => {
    const started = path.join(markers, 'at-start');
    const worker = running.workers.find((w) => w.name === 'test')!;
    await worker.pause();
    try {
      const r = await api('POST', '/v1/jobs', {
        type: 'test',
        payload: { started_marker: started },
        expires_at: inFuture(800),
        callback_url: `${rx.url}/at-start`,
      });
      expect(r.status).toBe(202);
      // No sweep runs here: only the worker's start write can end it.
      await waitFor(
        async () =>
          (
            await sql<{ over: boolean }>`select expires_at < now() as over from jobs where id = ${r.body.id}`.execute(
              env.db,
            )
          ).rows[0]?.over,
        { what: 'expires_at to pass' },
      );
      expect((await api('GET', `/v1/jobs/${r.body.id}`)).body.state).toBe('queued');
      worker.resume();
      const done = await jobInState(api, r.body.id, ['cancelled', 'failed', 'succeeded'], 20_000);
      expect(done).toMatchObject({ state: 'cancelled', attempts: 0, started_at: null, error: { code: 'expired' } });
      expect(existsSync(started)).toBe(false);
      const hook = await waitFor(() => rx.received.find((x) => x.path === '/at-start'), { what: 'the webhook' });
      expect(JSON.parse(hook.body)).toMatchObject({ type: 'job.cancelled', data: { error: { code: 'expired' } } });
    } finally {
      worker.resume();
    }
  });
});
