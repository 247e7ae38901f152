// Fairness, in process against real PostgreSQL and Redis: the window arithmetic, the deficit round-robin choice, the
// submit's fast path (admits within the window, in the same statement, even under concurrent submits) and the
// admitter's pass (priority then age within a tenant, never past the window).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../src/auth/keys.js';
import {
  admissionPolicy,
  candidates,
  type Candidate,
  getTenantLimits,
  setTenantLimits,
  windowOf,
} from '../src/db/admission.js';
import * as ledger from '../src/db/jobs.js';
import type { JobRow, NewJobRow } from '../src/db/types.js';
import { newId } from '../src/ids.js';
import { bullPriority, priorityOfBull } from '../src/domain.js';
import { admitOnce, planAdmission, refill } from '../src/workers/admitter.js';
import { client, createTestEnv, silentLog, tenantWithKeys, type TestEnv } from './helpers.js';

describe('windowOf', () => {
  it('is min(cap, ⌈window × weight⌉), and a cap of 0 admits nothing', () => {
    expect(windowOf({ window: 10 }, 1000, 1)).toBe(10);
    expect(windowOf({ window: 10 }, 1000, 2.5)).toBe(25);
    expect(windowOf({ window: 10 }, 7, 2)).toBe(7);
    expect(windowOf({ window: 10 }, 0, 2)).toBe(0);
    expect(windowOf({ window: 10 }, 1000, 0.01)).toBe(1);
  });
});

const cand = (tenant: string, o: Partial<Candidate> = {}): Candidate => ({
  tenant,
  type: 'email',
  waiting: 1000,
  live: 0,
  window: 1000,
  weight: 1,
  ...o,
});

describe('bullPriority', () => {
  it('orders by class first, then by admission rank; reads either encoding back as its class', () => {
    const order = [
      bullPriority('high', 50),
      bullPriority('normal', 0),
      bullPriority('normal', 1),
      bullPriority('normal', 100),
      bullPriority('low', 0),
    ];
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(new Set(order).size).toBe(order.length);
    expect(bullPriority('low', 1e9)).toBeLessThanOrEqual(2 ** 21);
    expect(order.map(priorityOfBull)).toEqual(['high', 'normal', 'normal', 'normal', 'low']);
    expect([1, 5, 10].map(priorityOfBull)).toEqual(['high', 'normal', 'low']);
  });
});

describe('planAdmission (deficit round-robin)', () => {
  it('shares the budget by weight among tenants with room', () => {
    const plan = planAdmission([cand('a'), cand('b', { weight: 2 }), cand('c', { weight: 0.5 })], 350, new Map());
    expect(Object.fromEntries(plan.map((s) => [s.tenant, s.n]))).toEqual({ a: 100, b: 200, c: 50 });
  });

  it('never gives a tenant more than its free window or its waiting jobs; the rest goes to the others', () => {
    const plan = planAdmission(
      [cand('a', { window: 10, live: 7 }), cand('b', { waiting: 2 }), cand('c'), cand('d', { live: 1000 })],
      100,
      new Map(),
    );
    expect(Object.fromEntries(plan.map((s) => [s.tenant, s.n]))).toEqual({ a: 3, b: 2, c: 95 });
  });

  it('carries fractional credit from pass to pass, so small weights still get their share', () => {
    const deficits = new Map<string, number>();
    const got = { a: 0, b: 0 };
    for (let pass = 0; pass < 30; pass++) {
      for (const s of planAdmission([cand('a', { weight: 0.25 }), cand('b', { weight: 0.75 })], 4, deficits))
        got[s.tenant as 'a' | 'b'] += s.n;
    }
    expect(got).toEqual({ a: 30, b: 90 });
  });

  it('refills a window once a quarter of it is free, or once all that waits fits', () => {
    expect(refill({ window: 1000, live: 751, waiting: 5000 })).toBe(0);
    expect(refill({ window: 1000, live: 750, waiting: 5000 })).toBe(250);
    expect(refill({ window: 1000, live: 100, waiting: 5000 })).toBe(900);
    expect(refill({ window: 1000, live: 999, waiting: 3 })).toBe(0);
    expect(refill({ window: 1000, live: 997, waiting: 3 })).toBe(3);
    expect(refill({ window: 1000, live: 1200, waiting: 3 })).toBe(0);
    expect(refill({ window: 3, live: 2, waiting: 9 })).toBe(1);
    expect(refill({ window: 10, live: 0, waiting: 0 })).toBe(0);
    const plan = planAdmission([cand('a', { live: 800 }), cand('b', { live: 700 })], 1000, new Map());
    expect(plan.map((s) => [s.tenant, s.n])).toEqual([['b', 300]]);
  });

  it('plans each type on its own budget', () => {
    const plan = planAdmission([cand('a'), cand('a', { type: 'image' })], 5, new Map());
    expect(plan.map((s) => [s.type, s.n])).toEqual([
      ['email', 5],
      ['image', 5],
    ]);
  });
});

let env: TestEnv;
beforeAll(async () => {
  env = await createTestEnv('admission', { env: { ADMISSION_WINDOW: '3' } });
});
afterAll(() => env?.close());

const policy = () => admissionPolicy(env.config);
const row = (tenant: string, o: Partial<NewJobRow> = {}): NewJobRow => ({
  id: newId(),
  tenant,
  type: 'test',
  state: 'queued',
  priority: 'normal',
  payload: JSON.stringify({}),
  max_attempts: 1,
  ...o,
});
const admitted = (rows: JobRow[]) => rows.filter((r) => r.admitted_at).length;
const finish = (rows: JobRow[]) =>
  ledger.markSucceededMany(
    env.db,
    rows.map((r) => ({ id: r.id, gen: r.generation, result: null })),
  );
const deps = () => ({ config: env.config, db: env.db, queues: env.queues, registry: env.registry, log: silentLog });

describe('admission at submit', () => {
  it('admits a batch up to the window, in priority order, and none of its delayed rows', async () => {
    const { tenant } = await tenantWithKeys(env);
    const rows = await ledger.insertJobs(
      env.db,
      [
        row(tenant, { priority: 'low' }),
        row(tenant),
        row(tenant, { state: 'delayed', run_at: new Date(Date.now() + 60_000) }),
        row(tenant, { priority: 'high' }),
        row(tenant),
      ],
      policy(),
    );
    expect(rows.map((r) => Boolean(r.admitted_at))).toEqual([false, true, false, true, true]);
    // Their places in the window (high first), which order them in BullMQ against other tenants' jobs.
    expect(rows.map((r) => r.admission_rank ?? null)).toEqual([null, 2, null, 1, 3]);
  });

  it('admits everything without a policy or with admission off', async () => {
    const { tenant } = await tenantWithKeys(env);
    expect(admitted(await ledger.insertJobs(env.db, [row(tenant), row(tenant), row(tenant), row(tenant)]))).toBe(4);
    const off = { ...policy(), on: false };
    expect(admitted(await ledger.insertJobs(env.db, [row(tenant), row(tenant), row(tenant), row(tenant)], off))).toBe(
      4,
    );
  });

  it('never admits past the window under concurrent submits on separate connections', async () => {
    const { tenant } = await tenantWithKeys(env);
    const results = await Promise.all(
      Array.from({ length: 12 }, () => ledger.insertJobs(env.db, [row(tenant), row(tenant)], policy())),
    );
    expect(admitted(results.flat())).toBe(3);
  });

  it('does not let a new job overtake its tenant jobs already waiting; other tenants are unaffected', async () => {
    const a = (await tenantWithKeys(env)).tenant;
    const b = (await tenantWithKeys(env)).tenant;
    const first = await ledger.insertJobs(env.db, [row(a), row(a), row(a), row(a)], policy());
    expect(admitted(first)).toBe(3);
    await finish(first.filter((r) => r.admitted_at));
    const [late] = await ledger.insertJobs(env.db, [row(a, { priority: 'high' })], policy());
    expect(late.admitted_at).toBeNull();
    const [other] = await ledger.insertJobs(env.db, [row(b)], policy());
    expect(other.admitted_at).not.toBeNull();
  });

  it('follows the tenant limits: its cap and its weight', async () => {
    const { tenant } = await tenantWithKeys(env);
    await setTenantLimits(env.db, tenant, { weight: 2 });
    const weighted = await ledger.insertJobs(
      env.db,
      Array.from({ length: 10 }, () => row(tenant)),
      policy(),
    );
    expect(admitted(weighted)).toBe(6);
    // Ranks over the weight: twice the jobs at each rank.
    expect(weighted.slice(0, 6).map((r) => r.admission_rank)).toEqual([0, 1, 1, 2, 2, 3]);
    const { tenant: capped } = await tenantWithKeys(env);
    await setTenantLimits(env.db, capped, { max_running: { test: 1 } });
    expect(admitted(await ledger.insertJobs(env.db, [row(capped), row(capped)], policy()))).toBe(1);
  });
});

describe('the admitter pass', () => {
  it('fills freed windows, priority then age, never past the window, and enqueues what it admitted', async () => {
    const { tenant } = await tenantWithKeys(env);
    const rows = await ledger.insertJobs(
      env.db,
      [row(tenant), row(tenant), row(tenant), row(tenant), row(tenant, { priority: 'low' }), row(tenant)],
      policy(),
    );
    const [, , , fourth, low, sixth] = rows;
    const high = (await ledger.insertJobs(env.db, [row(tenant, { priority: 'high' })], policy()))[0];
    expect(high.admitted_at).toBeNull();
    // Window full: nothing.
    expect((await admitOnce(deps())).filter((r) => r.tenant === tenant)).toEqual([]);
    await finish(rows.slice(0, 2));
    const next = (await admitOnce(deps())).filter((r) => r.tenant === tenant);
    expect(next.map((r) => r.id)).toEqual([high.id, fourth.id]);
    // One job of the window still live: these two take its places 2 and 3.
    expect(next.map((r) => r.admission_rank)).toEqual([2, 3]);
    expect((await env.queues.get('test').getJob(fourth.id))?.opts.priority).toBe(bullPriority('normal', 3));
    expect(await env.queues.get('test').getJob(high.id)).toBeDefined();
    await finish([rows[2], high, fourth]);
    const last = (await admitOnce(deps())).filter((r) => r.tenant === tenant);
    expect(last.map((r) => r.id)).toEqual([sixth.id, low.id]);
    const left = (await candidates(env.db, policy())).filter((c) => c.tenant === tenant);
    expect(left).toEqual([]);
  });

  it('admits a delayed job only once its run_at has come', async () => {
    const { tenant } = await tenantWithKeys(env);
    const [later] = await ledger.insertJobs(
      env.db,
      [row(tenant, { state: 'delayed', run_at: new Date(Date.now() + 60_000) })],
      policy(),
    );
    expect((await admitOnce(deps())).map((r) => r.id)).not.toContain(later.id);
    await env.db
      .updateTable('jobs')
      .set({ run_at: new Date(Date.now() - 1000) })
      .where('id', '=', later.id)
      .execute();
    expect((await admitOnce(deps())).map((r) => r.id)).toContain(later.id);
  });

  it('never admits a cancelled job', async () => {
    const { tenant } = await tenantWithKeys(env);
    const rows = await ledger.insertJobs(env.db, [row(tenant), row(tenant), row(tenant), row(tenant)], policy());
    const waiting = rows.find((r) => !r.admitted_at)!;
    await ledger.markCancelled(env.db, waiting.id);
    await finish(rows.filter((r) => r.admitted_at));
    expect((await admitOnce(deps())).map((r) => r.id)).not.toContain(waiting.id);
    expect(await env.queues.get('test').getJob(waiting.id)).toBeUndefined();
  });
});

describe('GET/PUT /v1/tenants/:id/limits', () => {
  it('operators change a tenant’s weight and caps (audited), viewers read them, clients are refused', async () => {
    const t = await tenantWithKeys(env);
    const viewer = await createKey(env.db, env.config.API_KEY_SECRET, t.tenant, 'viewer');
    const op = client(env.app, t.operatorKey);
    const put = await op('PUT', `/v1/tenants/${t.tenant}/limits`, { weight: 2, max_running: { test: 5 } });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({ tenant: t.tenant, weight: 2, max_running: { test: 5 } });
    expect(put.body.effective).toContainEqual({ type: 'test', max_running: 5, weight: 2, window: 5 });
    // What the body leaves out is kept; null returns to the default.
    const again = await op('PUT', `/v1/tenants/${t.tenant}/limits`, { max_running: { test: null } });
    expect(again.body).toMatchObject({ weight: 2, max_running: {} });
    expect(again.body.effective).toContainEqual({ type: 'test', max_running: 1000, weight: 2, window: 6 });
    const read = await client(env.app, viewer.key)('GET', `/v1/tenants/${t.tenant}/limits`);
    expect(read.status).toBe(200);
    expect(read.body.weight).toBe(2);
    expect((await client(env.app, viewer.key)('PUT', `/v1/tenants/${t.tenant}/limits`, { weight: 1 })).status).toBe(
      403,
    );
    const asClient = client(env.app, t.clientKey);
    expect((await asClient('GET', `/v1/tenants/${t.tenant}/limits`)).status).toBe(403);
    expect((await asClient('PUT', `/v1/tenants/${t.tenant}/limits`, { weight: 9 })).status).toBe(403);
    const audit = await env.db
      .selectFrom('audit_log')
      .selectAll()
      .where('target_kind', '=', 'tenant')
      .where('target', '=', t.tenant)
      .execute();
    expect(audit.map((a) => a.action)).toEqual(['tenant.limits', 'tenant.limits']);
    expect((await getTenantLimits(env.db, t.tenant))?.weight).toBe(2);
  });

  it('answers 404 for an unknown tenant and 400 problem+json for bad values, changing nothing', async () => {
    const t = await tenantWithKeys(env);
    const op = client(env.app, t.operatorKey);
    expect((await op('GET', '/v1/tenants/no-such-tenant/limits')).status).toBe(404);
    expect((await op('PUT', '/v1/tenants/no-such-tenant/limits', { weight: 1 })).status).toBe(404);
    for (const body of [
      { weight: 0 },
      { weight: -1 },
      { weight: 'heavy' },
      { weight: 1e9 },
      { max_running: { test: -1 } },
      { max_running: { test: 1.5 } },
      { max_running: { nosuchtype: 3 } },
      { max_running: 'all' },
      { extra: true },
      '{not json',
    ]) {
      const r = await op('PUT', `/v1/tenants/${t.tenant}/limits`, body, { 'content-type': 'application/json' });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.headers.get('content-type')).toContain('application/problem+json');
    }
    expect(await getTenantLimits(env.db, t.tenant)).toEqual({ weight: null, max_running: {} });
  });
});
