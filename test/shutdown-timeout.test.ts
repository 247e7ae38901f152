// SHUTDOWN_TIMEOUT_MS: a worker process whose job hangs still exits on SIGTERM once the grace period is over, and the
// job it left runs again on another worker. And a process whose log reader is gone (the supervisor that read its
// stdout died) still exits on SIGTERM.
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

  it.each(['web', 'worker'] as const)(
    'a %s process whose stdout nobody reads any more still exits on SIGTERM',
    async (kind) => {
      const proc = await startProcess(kind, env.env, kind === 'worker' ? { QUEUES: 'serial' } : {});
      procs.push(proc);
      // The reader goes: the process's next log line meets a broken pipe (EPIPE).
      proc.child.stdout!.destroy();
      proc.child.stderr!.destroy();
      // Its lines about shutting down are written into that broken pipe; the process must exit all the same, and
      // on its own: the helper would kill it only after 20 s, and a killed process has no exit code.
      const code = await proc.stop('SIGTERM', 20_000);
      expect(code).toBe(0);
    },
    30_000,
  );
});
