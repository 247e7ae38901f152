// Chaos on PostgreSQL: a throwaway cluster (initdb + pg_ctl in a temp dir; the shared server is never touched) is
// stopped for 10 s under real web and worker processes. The API answers 503 quickly, workers stop taking jobs
// instead of burning their attempts, and everything recovers by itself when the database returns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestEnv,
  sleep,
  startProcess,
  tenantWithKeys,
  uniqueName,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';
import { privatePostgres, type PrivatePostgres } from './support/private-postgres.js';

let pg: PrivatePostgres;
let env: TestEnv;
let key: string;
const procs: Proc[] = [];

beforeAll(async () => {
  pg = await privatePostgres();
  env = await createTestEnv('chaos_pg', {
    env: { DATABASE_URL: `${pg.url}/${uniqueName('chaos_pg')}`, TENANT_MAX_IN_FLIGHT: '0' },
  });
  key = (await tenantWithKeys(env)).clientKey;
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.close();
  await pg?.destroy();
});

/** A process; a start that times out on a loaded machine is tried again rather than failing the test. */
async function start(kind: 'web' | 'worker') {
  for (let tries = 1; ; tries++) {
    try {
      const p = await startProcess(kind, env.env);
      procs.push(p);
      return p;
    } catch (err) {
      if (tries >= 3 || !/timed out/.test(String(err))) throw err;
    }
  }
}

async function http(base: string, method: string, pathname: string, body?: unknown) {
  const t0 = performance.now();
  const res = await fetch(base + pathname, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get('content-type') ?? '',
    body: text ? JSON.parse(text) : undefined,
    ms: performance.now() - t0,
  };
}

describe('PostgreSQL stopped for 10 s', () => {
  it('answers 503, pauses the workers, and recovers without a restart', { timeout: 150_000 }, async () => {
    // One after the other: two cold starts at once can take longer than startProcess waits on a loaded machine.
    const web = await start('web');
    const worker = await start('worker');
    // A backlog that is still running when the database goes: 'test' jobs, 5 at a time, 400 ms each.
    const bulk = await http(web.url!, 'POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 60 }, (_, i) => ({ type: 'test', payload: { sleep_ms: 400, value: i } })),
    });
    expect(bulk.status).toBe(202);
    const ids: string[] = bulk.body.jobs.map((j: { id: string }) => j.id);
    await waitFor(async () => (await http(web.url!, 'GET', `/v1/jobs/${ids[0]}`)).body.state === 'succeeded', {
      timeout: 20_000,
      what: 'the backlog to start',
    });

    const queue = env.queues.get('test');
    await pg.stop();
    const downAt = Date.now();
    const answers: { status: number; ms: number; problem: boolean }[] = [];
    let ready503 = false;
    while (Date.now() - downAt < 10_000) {
      for (const [m, p, b] of [
        ['POST', '/v1/jobs', { type: 'test', payload: {} }],
        ['GET', `/v1/jobs/${ids[1]}`, undefined],
      ] as const) {
        const r = await http(web.url!, m, p, b);
        answers.push({ status: r.status, ms: r.ms, problem: r.type.includes('application/problem+json') });
      }
      ready503 ||= (await fetch(`${web.url}/readyz`)).status === 503;
      await sleep(500);
    }
    const countsDuringOutage = await queue.getJobCounts(
      'failed',
      'completed',
      'wait',
      'active',
      'prioritized',
      'delayed',
    );
    // Both processes lived through it (a pg client losing its socket mid-query must not crash a process).
    expect([web.child.exitCode, web.child.signalCode, worker.child.exitCode, worker.child.signalCode]).toEqual([
      null,
      null,
      null,
      null,
    ]);
    await pg.start();
    const upAt = Date.now();

    // While it was down: 503 problems (or a 202/200 in the first moments, from a connection still open), never hangs.
    const unavailable = answers.filter((a) => a.status === 503);
    expect(unavailable.length).toBeGreaterThan(answers.length / 2);
    expect(answers.every((a) => (a.status === 503 ? a.problem : a.status < 300))).toBe(true);
    expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(5_000);
    expect(ready503).toBe(true);
    // No job burned its attempts against a missing database.
    expect(countsDuringOutage.failed).toBe(0);

    // Back by itself: the same web process accepts work, the same worker finishes the backlog and the new job.
    const after = await waitFor(
      async () => {
        const r = await http(web.url!, 'POST', '/v1/jobs', { type: 'test', payload: { value: 'after' } });
        return r.status === 202 ? r : undefined;
      },
      { timeout: 30_000, interval: 250, what: 'the API to accept jobs again' },
    );
    const recoveredMs = Date.now() - upAt;
    const all = [...ids, after.body.id];
    try {
      await waitFor(
        async () => {
          const rows = await env.db.selectFrom('jobs').select(['state']).where('id', 'in', all).execute();
          return rows.every((r) => r.state === 'succeeded');
        },
        { timeout: 60_000, interval: 500, what: 'every job to succeed after the outage' },
      );
    } catch (err) {
      const rows = await env.db
        .selectFrom('jobs')
        .select(['id', 'state', 'attempts', 'error'])
        .where('id', 'in', all)
        .where('state', '!=', 'succeeded')
        .execute();
      const counts = await queue.getJobCounts();
      const log = worker
        .output()
        .split('\n')
        .filter((l) => /PostgreSQL|resume|pause|error|warn/i.test(l))
        .slice(-15)
        .join('\n');
      throw new Error(
        `${String(err)}\nnot succeeded: ${JSON.stringify(rows.slice(0, 5))} (${rows.length})\nqueue: ${JSON.stringify(counts)}\nworker log:\n${log}`,
      );
    }
    expect(web.child.exitCode).toBeNull();
    expect(worker.child.exitCode).toBeNull();
    expect(worker.output()).toMatch(/workers pause taking jobs/);
    expect(worker.output()).toMatch(/workers resume/);
    const p95 = unavailable.map((a) => a.ms).sort((a, b) => a - b)[Math.floor(unavailable.length * 0.95)];
    console.info(
      `chaos-postgres: ${unavailable.length}/${answers.length} answers 503 during the outage (p95 ${p95?.toFixed(0)} ms); accepting again ${recoveredMs} ms after PostgreSQL returned; ${all.length} jobs succeeded`,
    );
  });
});
