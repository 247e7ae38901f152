// Fairness on real processes (issue 19): one API process and worker processes (each running the admitter) on the
// `test` queue. Asserted by order and counts: a flooding tenant does not hold back another's jobs, a cap bounds a
// tenant's running jobs, weights share the workers, a wiped Redis loses nothing, and SIGKILL of the admitting process
// leaves nothing stuck.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTenantLimits } from '../src/db/admission.js';
import type { JobRow } from '../src/db/types.js';
import {
  client,
  createTestEnv,
  deleteKeys,
  startProcess,
  tenantWithKeys,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';

const START = { startTimeoutMs: 90_000 };
/** Two worker processes of two `test` slots each: four jobs run at once. */
const WORKER = { QUEUES: 'test', WORKER_CONCURRENCY: 'test=2' };
let env: TestEnv;
let web: Proc;
let workers: Proc[] = [];
const markers = mkdtempSync(path.join(os.tmpdir(), 'fairness-'));

beforeAll(async () => {
  env = await createTestEnv('fairness', {
    env: { ADMISSION_WINDOW: '4', ADMISSION_INTERVAL_MS: '50', RECONCILE_GRACE_MS: '500' },
  });
  web = await startProcess('web', env.env, {}, START);
}, 120_000);

afterAll(async () => {
  await Promise.all([web, ...workers].map((p) => p?.stop()));
  await env?.close();
});

/** Two worker processes, started by the first test that needs them. */
async function ensureWorkers() {
  if (workers.length === 0)
    workers = await Promise.all([
      startProcess('worker', env.env, WORKER, START),
      startProcess('worker', env.env, WORKER, START),
    ]);
}

async function tenant() {
  const t = await tenantWithKeys(env);
  return { ...t, api: client(web.url!, t.clientKey) };
}

async function submit(api: ReturnType<typeof client>, n: number, payload: Record<string, unknown>): Promise<string[]> {
  const r = await api('POST', '/v1/jobs/bulk', {
    jobs: Array.from({ length: n }, (_, i) => ({ type: 'test', payload: { ...payload, value: i } })),
  });
  expect(r.status).toBe(202);
  return r.body.jobs.map((j: { id: string }) => j.id);
}

const rows = (ids: string[]) => env.db.selectFrom('jobs').selectAll().where('id', 'in', ids).execute();

async function allSucceeded(ids: string[], timeout = 90_000): Promise<JobRow[]> {
  return waitFor(
    async () => {
      const r = await rows(ids);
      return r.every((j) => j.state === 'succeeded') ? r : undefined;
    },
    { timeout, interval: 200, what: `${ids.length} jobs to succeed` },
  );
}

/** Jobs in start order. */
const byStart = (list: JobRow[]) =>
  [...list].sort((a, b) => a.started_at!.getTime() - b.started_at!.getTime() || a.id.localeCompare(b.id));

/** The most jobs of `list` running at one instant, by their ledger start and finish. */
function peakOverlap(list: JobRow[]): number {
  const edges = list.flatMap((j) => [
    { t: j.started_at!.getTime(), d: 1 },
    { t: j.finished_at!.getTime(), d: -1 },
  ]);
  edges.sort((a, b) => a.t - b.t || a.d - b.d);
  let now = 0;
  let peak = 0;
  for (const e of edges) peak = Math.max(peak, (now += e.d));
  return peak;
}

describe('admission across processes', () => {
  it('after a wiped Redis, re-enqueues the admitted jobs and admits the rest later: each runs exactly once', async () => {
    const a = await tenant();
    const dir = path.join(markers, 'wipe');
    // No worker yet: the window (4) is admitted to BullMQ, the other 6 wait in the ledger.
    const ids = await submit(a.api, 10, { marker: dir });
    const before = await rows(ids);
    expect(before.filter((r) => r.admitted_at).length).toBe(4);
    expect(await env.queues.get('test').getJobCountByTypes('waiting', 'prioritized')).toBe(4);
    await deleteKeys(env.config);
    expect(await env.queues.get('test').getJobCountByTypes('waiting', 'prioritized')).toBe(0);
    await ensureWorkers();
    const done = await allSucceeded(ids);
    expect(done.every((r) => r.admitted_at)).toBe(true);
    const runs = readdirSync(dir).map((f) => readFileSync(path.join(dir, f), 'utf8').trim().split('\n').length);
    expect(runs.sort()).toEqual(Array(10).fill(1));
  }, 180_000);

  it("a flood from one tenant does not delay another's jobs", async () => {
    await ensureWorkers();
    const a = await tenant();
    const b = await tenant();
    const flood = await submit(a.api, 48, { sleep_ms: 100 });
    // B submits once A's flood is running.
    await waitFor(async () => (await rows(flood)).some((r) => r.started_at), { what: 'the flood to start' });
    const few = await submit(b.api, 4, { sleep_ms: 100 });
    const done = byStart(await allSucceeded([...flood, ...few]));
    const lastB = Math.max(...few.map((id) => done.findIndex((r) => r.id === id)));
    const aBefore = done.slice(0, lastB).filter((r) => r.tenant === a.tenant).length;
    // Ahead of B's last job: A's jobs started before B's submit, A's window in BullMQ (4), what the admitter added while
    // B's were queued. Without admission all 48 would be ahead.
    expect(aBefore).toBeLessThan(24);
  }, 120_000);

  it('never runs more of a tenant’s jobs at once than its cap', async () => {
    await ensureWorkers();
    const c = await tenant();
    await setTenantLimits(env.db, c.tenant, { max_running: { test: 2 } });
    const ids = await submit(c.api, 16, { sleep_ms: 150 });
    const done = await allSucceeded(ids);
    // Four slots are free, so only the cap keeps it at two; and two are reached.
    expect(peakOverlap(done)).toBe(2);
  }, 120_000);

  it('shares the workers between flooding tenants by weight', async () => {
    await ensureWorkers();
    const d = await tenant();
    const e = await tenant();
    await setTenantLimits(env.db, e.tenant, { weight: 2 });
    const [dIds, eIds] = await Promise.all([submit(d.api, 60, { sleep_ms: 60 }), submit(e.api, 60, { sleep_ms: 60 })]);
    const done = byStart(await allSucceeded([...dIds, ...eIds]));
    // While both are backlogged (the first 45 starts): D's window is 4, E's 8, so E takes about two thirds.
    const eShare = done.slice(0, 45).filter((r) => r.tenant === e.tenant).length;
    expect(eShare).toBeGreaterThanOrEqual(24);
    expect(eShare).toBeLessThanOrEqual(36);
  }, 120_000);

  it('SIGKILL of the admitting worker: another takes over and nothing is left waiting', async () => {
    await ensureWorkers();
    const leaderOf = () => workers.find((w) => w.output().includes('admitter: this process admits jobs'));
    const leader = await waitFor(leaderOf, { what: 'an admitting worker' });
    const other = workers.find((w) => w !== leader)!;
    const a = await tenant();
    const ids = await submit(a.api, 30, { sleep_ms: 80 });
    await waitFor(async () => (await rows(ids)).filter((r) => r.state === 'succeeded').length >= 4, {
      what: 'some to finish',
    });
    await leader.stop('SIGKILL');
    workers = [other];
    const done = await allSucceeded(ids);
    expect(done.length).toBe(30);
    expect(other.output()).toContain('admitter: this process admits jobs');
  }, 180_000);
});
