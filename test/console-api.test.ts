// The console's API: search in GET /v1/jobs, a job's timeline and logs, the viewer role, audit "from where". Real
// PostgreSQL and Redis, a real worker runtime in this process; the app called in process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../src/auth/keys.js';
import { client, createTestEnv, jobInState, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let a: Awaited<ReturnType<typeof tenantWithKeys>>;
let b: Awaited<ReturnType<typeof tenantWithKeys>>;
let apiA: ReturnType<typeof client>;
let apiB: ReturnType<typeof client>;
let operator: ReturnType<typeof client>;
let viewer: ReturnType<typeof client>;
let viewerKey: string;

beforeAll(async () => {
  env = await createTestEnv('console-api');
  a = await tenantWithKeys(env);
  b = await tenantWithKeys(env);
  apiA = client(env.app, a.clientKey);
  apiB = client(env.app, b.clientKey);
  operator = client(env.app, b.operatorKey);
  const v = await createKey(env.db, env.config.API_KEY_SECRET, b.tenant, 'viewer');
  viewer = client(env.app, v.key);
  viewerKey = v.key;
  await env.startWorkers(['test']);
});
afterAll(async () => env?.close());

const submit = async (api: ReturnType<typeof client>, payload: Record<string, unknown>) => {
  const r = await api('POST', '/v1/jobs', { type: 'test', payload });
  expect(r.status).toBe(202);
  return r.body.id as string;
};
const ids = (r: { body: { items: { id: string }[] } }) => r.body.items.map((j) => j.id);

describe('search in GET /v1/jobs', () => {
  it('finds jobs by an email address inside the payload, newest first, within the tenant for a client', async () => {
    const a1 = await submit(apiA, { value: { to: 'Customer.X@example.com', user_id: 'u-1001' } });
    const a2 = await submit(apiA, { value: { to: ['someone@example.org', 'customer.x@example.com'] } });
    await submit(apiA, { value: { to: 'other@example.com' } });
    const b1 = await submit(apiB, { value: { to: 'customer.x@example.com' } });

    const mine = await apiA('GET', '/v1/jobs?q=customer.x%40example.com');
    expect(mine.status).toBe(200);
    expect(ids(mine)).toEqual([a2, a1]);
    // A client's tenant filter cannot reach another tenant.
    expect(ids(await apiA('GET', `/v1/jobs?q=customer.x%40example.com&tenant=${b.tenant}`))).toEqual([a2, a1]);
    expect(ids(await apiB('GET', '/v1/jobs?q=customer.x%40example.com'))).toEqual([b1]);
    // Operators and viewers search every tenant, or one.
    expect(ids(await operator('GET', '/v1/jobs?q=customer.x%40example.com'))).toEqual([b1, a2, a1]);
    expect(ids(await viewer('GET', '/v1/jobs?q=customer.x%40example.com'))).toEqual([b1, a2, a1]);
    expect(ids(await viewer('GET', `/v1/jobs?q=customer.x%40example.com&tenant=${a.tenant}`))).toEqual([a2, a1]);
    // By a user id, and by an id prefix.
    expect(ids(await apiA('GET', '/v1/jobs?q=u-1001'))).toEqual([a1]);
    expect(ids(await apiA('GET', `/v1/jobs?q=${a1.slice(0, 23)}`))).toContain(a1);
    // Paged by cursor.
    const p1 = await operator('GET', '/v1/jobs?q=customer.x%40example.com&limit=2');
    expect(ids(p1)).toEqual([b1, a2]);
    const p2 = await operator('GET', `/v1/jobs?q=customer.x%40example.com&limit=2&cursor=${p1.body.next_cursor}`);
    expect(ids(p2)).toEqual([a1]);
    expect(p2.body.next_cursor).toBeNull();
  });

  it('filters by error code, priority, parent and creation time', async () => {
    const failed = await submit(apiA, { permanent: true, value: 'filters' });
    await jobInState(apiA, failed, ['failed']);
    const r = await apiA('GET', '/v1/jobs?error_code=test_permanent&q=filters');
    expect(ids(r)).toEqual([failed]);
    const since = new Date(Date.now() - 60_000).toISOString();
    expect(ids(await apiA('GET', `/v1/jobs?created_after=${since}&q=filters&priority=normal`))).toEqual([failed]);
    expect(ids(await apiA('GET', `/v1/jobs?created_before=${since}&q=filters`))).toEqual([]);
    expect(ids(await apiA('GET', `/v1/jobs?parent_id=${failed}`))).toEqual([]);
  });

  it('answers bad search input with a 400 problem naming the field', async () => {
    for (const [query, field] of [
      ['q=ab', 'q'],
      ['created_after=yesterday', 'created_after'],
      ['parent_id=nope', 'parent_id'],
      ['error_code=DROP%20TABLE', 'error_code'],
      ['priority=urgent', 'priority'],
      ['tenant=Not%20A%20Tenant', 'tenant'],
    ]) {
      const r = await apiA('GET', `/v1/jobs?${query}`);
      expect(r.status, query).toBe(400);
      expect(r.headers.get('content-type')).toContain('application/problem+json');
      expect(r.body.errors.map((e: { path: string }) => e.path)).toContain(`query.${field}`);
    }
  });
});

describe('GET /v1/jobs/{id}/timeline', () => {
  it("shows each attempt with its worker, a failed attempt's error, and a retry as a new run", async () => {
    const id = await submit(apiA, { fail_times: 3 });
    await jobInState(apiA, id, ['failed']);
    const first = await apiA('GET', `/v1/jobs/${id}/timeline`);
    expect(first.status).toBe(200);
    expect(first.body.attempts.map((x: { attempt: number; outcome: string }) => [x.attempt, x.outcome])).toEqual([
      [1, 'delayed'],
      [2, 'delayed'],
      [3, 'failed'],
    ]);
    expect(first.body.attempts[0].error).toEqual({ code: 'processor_error', message: 'planned failure on attempt 1' });
    expect(first.body.attempts[2].process).toMatch(/:\d+$/);
    expect(first.body.attempts.every((x: { wait_ms: number; run_ms: number }) => x.wait_ms >= 0 && x.run_ms >= 0)).toBe(
      true,
    );

    expect((await apiA('POST', `/v1/jobs/${id}/retry`)).status).toBe(202);
    await jobInState(apiA, id, ['failed']);
    const job = (await apiA('GET', `/v1/jobs/${id}`)).body;
    const after = await apiA('GET', `/v1/jobs/${id}/timeline`);
    const events = after.body.events.map((e: { from: string; to: string }) => `${e.from}>${e.to}`);
    expect(events.filter((e: string) => e === 'running>failed')).toHaveLength(2);
    expect(events[events.indexOf('running>failed') + 1]).toBe('failed>queued');
    // The retry's runs carry the job's current generation (the retry bumps it once run fencing lands).
    const retried = after.body.attempts.slice(3);
    expect(retried.map((x: { attempt: number }) => x.attempt)).toEqual([1, 2, 3]);
    const row = await env.db.selectFrom('jobs').select('generation').where('id', '=', job.id).executeTakeFirstOrThrow();
    expect(retried.every((x: { generation: number }) => x.generation === row.generation)).toBe(true);
  });

  it("is tenant-scoped: another tenant's job is 404; a viewer reads it", async () => {
    const id = await submit(apiA, {});
    await jobInState(apiA, id, ['succeeded']);
    expect((await apiB('GET', `/v1/jobs/${id}/timeline`)).status).toBe(404);
    expect((await apiB('GET', `/v1/jobs/${id}/logs`)).status).toBe(404);
    const v = await viewer('GET', `/v1/jobs/${id}/timeline`);
    expect(v.status).toBe(200);
    expect(v.body.attempts).toMatchObject([{ attempt: 1, outcome: 'succeeded', error: null }]);
    expect((await apiA('GET', '/v1/jobs/not-a-job/timeline')).status).toBe(404);
  });
});

describe('GET /v1/jobs/{id}/logs', () => {
  it('returns the lines the processor kept, of each attempt, in order', async () => {
    const id = await submit(apiA, { log_lines: 3, fail_times: 1 });
    await jobInState(apiA, id, ['succeeded']);
    const r = await apiA('GET', `/v1/jobs/${id}/logs`);
    expect(r.status).toBe(200);
    expect(r.body.truncated).toBe(false);
    expect(r.body.items.map((l: { message: string }) => l.message)).toEqual([
      'step 0 of attempt 1',
      'step 1 of attempt 1',
      'step 2 of attempt 1',
      'step 0 of attempt 2',
      'step 1 of attempt 2',
      'step 2 of attempt 2',
    ]);
    expect(r.body.items[4].fields).toEqual({ i: 1, attempt: 2 });
  });

  it('keeps at most the bound of lines per job, the last one saying later lines were dropped', async () => {
    const id = await submit(apiA, { log_lines: 1_200 });
    await jobInState(apiA, id, ['succeeded']);
    const r = await apiA('GET', `/v1/jobs/${id}/logs`);
    expect(r.body.truncated).toBe(true);
    expect(r.body.items).toHaveLength(500);
    expect(r.body.items[498].message).toBe('step 498 of attempt 1');
    expect(r.body.items[499].message).toMatch(/^job log limit reached \(500 lines or 262144 bytes per job\)/);
  });
});

describe('the viewer role', () => {
  it('reads everything an operator reads and changes nothing', async () => {
    const id = await submit(apiA, { sleep_ms: 60_000 });
    await jobInState(apiA, id, ['running']);
    expect((await viewer('GET', `/v1/jobs/${id}`)).status).toBe(200);
    expect((await viewer('GET', '/v1/queues')).status).toBe(200);
    expect((await viewer('GET', '/v1/audit')).status).toBe(200);
    expect((await env.app.request('/metrics', { headers: { authorization: `Bearer ${viewerKey}` } })).status).toBe(200);
    for (const [method, path, body] of [
      ['POST', `/v1/jobs/${id}/cancel`, undefined],
      ['POST', `/v1/jobs/${id}/retry`, undefined],
      ['POST', '/v1/jobs', { type: 'test', payload: {} }],
      ['POST', '/v1/queues/test/pause', undefined],
      ['PUT', '/v1/schedules/viewer-probe', { type: 'test', payload: {}, every_ms: 3_600_000 }],
    ] as const) {
      const r = await viewer(method, path, body);
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.headers.get('content-type')).toContain('application/problem+json');
    }
    expect((await apiA('GET', `/v1/jobs/${id}`)).body.state).toBe('running');
    expect(await env.queues.get('test').isPaused()).toBe(false);
    expect((await apiA('POST', `/v1/jobs/${id}/cancel`)).status).toBe(202);
  });
});

describe('audit from where', () => {
  it('records the key and the surface of a job action, shown to operators and viewers', async () => {
    const id = await submit(apiA, { permanent: true });
    await jobInState(apiA, id, ['failed']);
    expect((await apiA('POST', `/v1/jobs/${id}/retry`)).status).toBe(202);
    const entries = await waitFor(async () => {
      const r = await viewer('GET', `/v1/audit?target_kind=job&target=${id}`);
      return r.body.items.length ? r.body.items : undefined;
    });
    expect(entries).toMatchObject([
      { action: 'job.retry', actor: { key_id: a.clientKeyId, role: 'client' }, surface: 'api', client_addr: null },
    ]);
  });
});

describe('OpenAPI', () => {
  it('documents the search parameters and the timeline and logs routes', async () => {
    const doc = (await (await env.app.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { parameters?: { name: string }[] }>>;
    };
    const params = doc.paths['/v1/jobs'].get.parameters?.map((p) => p.name);
    expect(params).toEqual(
      expect.arrayContaining(['q', 'error_code', 'created_after', 'created_before', 'parent_id', 'priority', 'tenant']),
    );
    expect(doc.paths['/v1/jobs/{id}/timeline'].get).toBeDefined();
    expect(doc.paths['/v1/jobs/{id}/logs'].get).toBeDefined();
  });
});
