// SHUTDOWN_TIMEOUT_MS: a worker process whose job hangs still exits on SIGTERM once the grace period is over, and the
// job it left runs again on another worker.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, createTestEnv, jobInState, type Proc, startProcess, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
const procs: Proc[] = [];

beforeAll(async () => {
  env = await createTestEnv('shutdown-timeout', { env: { SHUTDOWN_TIMEOUT_MS: '1000' } });
  const t = await tenantWithKeys(env);
  api = client(env.app, t.clientKey);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.close();
});

describe('shutdown timeout', () => {
  it('shutdown timeout with a hung job: the worker exits on SIGTERM after the grace period, and the job runs again elsewhere', async () => {
    const first = await startProcess('worker', env.env, { QUEUES: 'serial' });
    procs.push(first);
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: { value: 'later', hang_on_attempt: 1 } });
    await jobInState(api, r.body.id, ['running']);

    // Far beyond the 1 s grace period: a process still there by then is killed, and its exit code is null.
    const code = await first.stop('SIGTERM', 20_000);
    const out = first.output();
    expect(code).not.toBeNull();
    expect(out.indexOf('shutdown grace period over')).toBeGreaterThan(out.indexOf('shutting down'));

    // The hung run's lock lapses; another worker runs the job again.
    const second = await startProcess('worker', env.env, { QUEUES: 'serial' });
    procs.push(second);
    const done = await jobInState(api, r.body.id, ['succeeded', 'failed'], 30_000);
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2, result: { echo: 'later', attempt: 2 } });
  });
});
