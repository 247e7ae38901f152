// Submit → a real worker process runs → the ledger shows the outcome. Retries, priorities, cancel, retry.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, createTestEnv, jobInState, type Proc, startProcess, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let web: Proc;
let worker: Proc;
let api: ReturnType<typeof client>;
const markers = mkdtempSync(path.join(os.tmpdir(), 'lifecycle-'));

beforeAll(async () => {
  env = await createTestEnv('lifecycle');
  const t = await tenantWithKeys(env);
  [web, worker] = await Promise.all([startProcess('web', env.env), startProcess('worker', env.env)]);
  api = client(web.url!, t.clientKey);
});

afterAll(async () => {
  await Promise.all([web?.stop(), worker?.stop()]);
  await env?.close();
});

const until = (id: string, states: string[], timeout?: number) => jobInState(api, id, states, timeout);

describe('job lifecycle over HTTP with a real worker', () => {
  it('runs a job to succeeded with its result', async () => {
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { value: { hello: 'world' }, progress_steps: 2, sleep_ms: 100 },
    });
    expect(r.status).toBe(202);
    expect(r.headers.get('location')).toBe(`/v1/jobs/${r.body.id}`);
    expect(r.body).toMatchObject({
      type: 'test',
      state: 'queued',
      priority: 'normal',
      progress: 0,
      attempts: 0,
      max_attempts: 3,
    });
    const done = await until(r.body.id, ['succeeded']);
    expect(done).toMatchObject({
      state: 'succeeded',
      progress: 100,
      attempts: 1,
      result: { echo: { hello: 'world' }, attempt: 1 },
      error: null,
    });
    expect(Date.parse(done.finished_at)).toBeGreaterThanOrEqual(Date.parse(done.started_at));
  });

  it('retries with backoff, then fails with the error recorded', async () => {
    const ok = await api('POST', '/v1/jobs', { type: 'test', payload: { fail_times: 2 } });
    const bad = await api('POST', '/v1/jobs', { type: 'test', payload: { fail_times: 5 } });
    const succeeded = await until(ok.body.id, ['succeeded']);
    expect(succeeded.attempts).toBe(3);
    const failed = await until(bad.body.id, ['failed']);
    expect(failed).toMatchObject({
      state: 'failed',
      attempts: 3,
      error: { code: 'processor_error', message: 'planned failure on attempt 3' },
    });
  });

  it('fails a payload that can never succeed at once, without retries', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { permanent: true } });
    const failed = await until(r.body.id, ['failed']);
    expect(failed).toMatchObject({ attempts: 1, error: { code: 'test_permanent' } });
  });

  it('runs high-priority jobs before low ones when there is a backlog', async () => {
    const dir = mkdtempSync(path.join(markers, 'prio-'));
    // A blocker occupies the single serial slot while the backlog builds.
    const blocker = await api('POST', '/v1/jobs', { type: 'serial', payload: { sleep_ms: 1500 } });
    await until(blocker.body.id, ['running']);
    const low = await api('POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 5 }, () => ({ type: 'serial', priority: 'low', payload: { started_marker: dir } })),
    });
    const high = await api('POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 5 }, () => ({ type: 'serial', priority: 'high', payload: { started_marker: dir } })),
    });
    expect(low.status).toBe(202);
    const all = [...low.body.jobs, ...high.body.jobs].map((j: { id: string }) => j.id);
    await Promise.all(all.map((id) => until(id, ['succeeded'])));
    const started = await Promise.all(all.map(async (id) => (await api('GET', `/v1/jobs/${id}`)).body));
    started.sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at));
    expect(started.slice(0, 5).map((j) => j.priority)).toEqual(Array(5).fill('high'));
  });

  it('delays a job with run_at', async () => {
    const runAt = new Date(Date.now() + 1500).toISOString();
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: {}, run_at: runAt });
    expect(r.body.state).toBe('delayed');
    const done = await until(r.body.id, ['succeeded']);
    expect(Date.parse(done.started_at)).toBeGreaterThanOrEqual(Date.parse(runAt) - 50);
  });

  it('cancels a queued job and a running one', async () => {
    const delayed = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 60_000).toISOString(),
    });
    const c1 = await api('POST', `/v1/jobs/${delayed.body.id}/cancel`);
    expect(c1.status).toBe(200);
    expect(c1.body.state).toBe('cancelled');

    const dir = mkdtempSync(path.join(markers, 'cancel-'));
    const long = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { sleep_ms: 20_000, progress_steps: 20, marker: dir },
    });
    await until(long.body.id, ['running']);
    const c2 = await api('POST', `/v1/jobs/${long.body.id}/cancel`);
    expect(c2.status).toBe(202);
    const ended = await until(long.body.id, ['cancelled', 'succeeded', 'failed'], 5_000);
    expect(ended.state).toBe('cancelled');
    expect(readdirSync(dir)).toEqual([]);

    const again = await api('POST', `/v1/jobs/${long.body.id}/cancel`);
    expect(again.status).toBe(409);
    expect(again.headers.get('content-type')).toContain('application/problem+json');
  });

  it('retries a failed job on request, and refuses to retry a running one', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: { fail_times: 1 } });
    await until(r.body.id, ['failed']);
    const retry = await api('POST', `/v1/jobs/${r.body.id}/retry`);
    expect(retry.status).toBe(202);
    expect(retry.body).toMatchObject({ state: 'queued', attempts: 0, error: null });
    // A retry starts a fresh set of attempts, so the run is attempt 1 again and fail_times: 1 fails it again.
    const again = await until(r.body.id, ['failed', 'succeeded']);
    expect(again.state).toBe('failed');

    const running = await api('POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: 2000 } });
    await until(running.body.id, ['running']);
    expect((await api('POST', `/v1/jobs/${running.body.id}/retry`)).status).toBe(409);
  });

  it('counts a side effect once per successful job', async () => {
    const dir = mkdtempSync(path.join(markers, 'once-'));
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { marker: dir } });
    await until(r.body.id, ['succeeded']);
    expect(readFileSync(path.join(dir, `${r.body.id}.done`), 'utf8')).toBe('1\n');
  });
});
