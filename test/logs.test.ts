// What a person at a terminal reads: pretty one-line logs (pino-pretty through pino's transport) when `npm start`
// runs in a terminal, one readable line per request and per finished job, and each process saying when it stopped.
// Real web and worker processes; their output is piped here, as foreman pipes it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logEnvForChildren } from '../src/log.js';
import { client, createTestEnv, jobInState, startProcess, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;

beforeAll(async () => {
  env = await createTestEnv('logs', { testJobs: false });
  keys = await tenantWithKeys(env);
});
afterAll(() => env?.close());

// Colour codes off: pino-pretty colours when FORCE_COLOR is set at all, as npm start sets it.
const lines = (out: string) =>
  out
    .replace(/\x1b\[\d+m/g, '')
    .split('\n')
    .filter((l) => l.trim());

describe('npm start decides the log format and passes it down', () => {
  it('pretty (with colour, which the pipe would turn off) in a terminal, JSON otherwise; LOG_FORMAT set wins', () => {
    expect(logEnvForChildren({ LOG_FORMAT: undefined }, true)).toEqual({ LOG_FORMAT: 'pretty', FORCE_COLOR: '1' });
    expect(logEnvForChildren({ LOG_FORMAT: undefined }, false)).toEqual({ LOG_FORMAT: 'json' });
    expect(logEnvForChildren({ LOG_FORMAT: 'json' }, true)).toEqual({ LOG_FORMAT: 'json' });
  });
});

describe('processes started as npm start starts them in a terminal', () => {
  it('print one readable line per request and per finished job, and say when they stop', async () => {
    const pretty = { LOG_FORMAT: 'pretty', FORCE_COLOR: '1' };
    const [web, worker] = await Promise.all([
      startProcess('web', env.env, pretty, { startTimeoutMs: 120_000 }),
      startProcess('worker', env.env, { ...pretty, QUEUES: 'report' }, { startTimeoutMs: 120_000 }),
    ]);
    try {
      const api = client(web.url!, keys.clientKey);
      const r = await api('POST', '/v1/jobs', { type: 'report', payload: { kind: 'jobs' } });
      expect(r.status).toBe(202);
      await jobInState(api, r.body.id, ['succeeded'], 60_000);
      const reqLine = await waitFor(() => lines(web.output()).find((l) => l.includes('POST /v1/jobs 202')), {
        what: 'the request line',
      });
      expect(reqLine).toMatch(/^\[\d\d:\d\d:\d\d\] INFO \(web\): POST \/v1\/jobs 202 [\d.]+ ms /);
      const jobLine = await waitFor(() => lines(worker.output()).find((l) => l.includes('report job succeeded')), {
        what: 'the finished-job line',
      });
      expect(jobLine).toMatch(/INFO \(worker\): report job succeeded in \d+ ms .*"job_id":"[0-9a-f-]{36}"/);
    } finally {
      expect(await worker.stop('SIGTERM')).toBe(0);
      expect(await web.stop('SIGTERM')).toBe(0);
    }
    for (const [proc, name] of [
      [worker, 'worker'],
      [web, 'web'],
    ] as const) {
      const out = lines(proc.output());
      expect(
        out.filter((l) => l.startsWith('{')),
        `${name} printed JSON`,
      ).toEqual([]);
      expect(out.at(-1), name).toMatch(new RegExp(`INFO \\(${name}\\): stopped$`));
    }
  }, 240_000);

  it('print JSON lines when LOG_FORMAT is json (production)', async () => {
    const worker = await startProcess(
      'worker',
      env.env,
      { LOG_FORMAT: 'json', QUEUES: 'report' },
      { startTimeoutMs: 120_000 },
    );
    expect(await worker.stop('SIGTERM')).toBe(0);
    const out = lines(worker.output()).map((l) => JSON.parse(l) as { msg: string; process: string });
    expect(out.map((l) => l.msg)).toEqual(expect.arrayContaining(['worker ready', 'shutting down', 'stopped']));
    expect(out.at(-1)).toMatchObject({ msg: 'stopped', process: 'worker' });
  }, 180_000);
});
