// Dedup while live (POST /v1/jobs `dedupe_key`): one live job per tenant and key, however many submits race for it,
// from however many API processes; the key is free again once that job ends; tenants never see each other's jobs
// through it; and how it sits beside Idempotency-Key. Against two real `web` processes, real PostgreSQL and Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, createTestEnv, jobInState, type Proc, startProcess, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let webs: Proc[] = [];
let a: Awaited<ReturnType<typeof tenantWithKeys>>;
let b: Awaited<ReturnType<typeof tenantWithKeys>>;
/** Tenant a through the first and the second API process, tenant b through the first. */
let a1: ReturnType<typeof client>;
let a2: ReturnType<typeof client>;
let b1: ReturnType<typeof client>;
let inProc: ReturnType<typeof client>;

beforeAll(async () => {
  env = await createTestEnv('dedupe');
  [a, b] = await Promise.all([tenantWithKeys(env), tenantWithKeys(env)]);
  webs = await Promise.all([startProcess('web', env.env), startProcess('web', env.env)]);
  a1 = client(webs[0].url!, a.clientKey);
  a2 = client(webs[1].url!, a.clientKey);
  b1 = client(webs[0].url!, b.clientKey);
  inProc = client(env.app, a.clientKey);
}, 90_000);

afterAll(async () => {
  await Promise.all(webs.map((w) => w.stop()));
  await env?.close();
});

const spec = (dedupe_key: string, value: unknown = 1) => ({ type: 'test', payload: { value }, dedupe_key });

async function jobsWithKey(tenant: string, key: string): Promise<{ id: string; state: string }[]> {
  return env.db
    .selectFrom('jobs')
    .select(['id', 'state'])
    .where('tenant', '=', tenant)
    .where('dedupe_key', '=', key)
    .orderBy('id')
    .execute();
}

describe('dedupe_key', () => {
  it('50 concurrent submits with one key across two API processes create one job; the rest answer it with 200', async () => {
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) => (i % 2 ? a2 : a1)('POST', '/v1/jobs', spec('nightly', i))),
    );
    const created = replies.filter((r) => r.status === 202);
    const hits = replies.filter((r) => r.status === 200);
    expect(created).toHaveLength(1);
    expect(hits).toHaveLength(49);
    const id = created[0].body.id;
    expect(created[0].headers.get('dedupe-hit')).toBeNull();
    for (const h of hits) {
      expect(h.headers.get('dedupe-hit')).toBe('true');
      expect(h.body.id).toBe(id);
      expect(h.body.dedupe_key).toBe('nightly');
      expect(h.headers.get('location')).toBe(`/v1/jobs/${id}`);
    }
    expect(await jobsWithKey(a.tenant, 'nightly')).toEqual([{ id, state: 'queued' }]);
  });

  it('two submits of one key in the same group-commit batch, and in one bulk request, create one job', async () => {
    const replies = await Promise.all([1, 2, 3].map((v) => inProc('POST', '/v1/jobs', spec('same-batch', v))));
    expect(replies.map((r) => r.status).sort()).toEqual([200, 200, 202]);
    expect(new Set(replies.map((r) => r.body.id)).size).toBe(1);

    const bulk = await inProc('POST', '/v1/jobs/bulk', {
      jobs: [spec('bulk-1'), { type: 'test', payload: {} }, spec('bulk-1', 2), spec('same-batch')],
    });
    expect(bulk.status).toBe(202);
    expect(bulk.body.deduplicated).toEqual([2, 3]);
    const ids = bulk.body.jobs.map((j: { id: string }) => j.id);
    expect(ids[2]).toBe(ids[0]);
    expect(ids[3]).toBe(replies[0].body.id);
    expect(new Set(ids).size).toBe(3);
    expect(await jobsWithKey(a.tenant, 'bulk-1')).toHaveLength(1);
    expect(await jobsWithKey(a.tenant, 'same-batch')).toHaveLength(1);
  });

  it('another tenant with the same key gets its own job, and never the first tenant’s', async () => {
    const first = await a1('POST', '/v1/jobs', spec('shared-key'));
    expect(first.status).toBe(202);
    const replies = await Promise.all(Array.from({ length: 10 }, () => b1('POST', '/v1/jobs', spec('shared-key'))));
    expect(replies.filter((r) => r.status === 202)).toHaveLength(1);
    for (const r of replies) {
      expect(r.body.tenant).toBe(b.tenant);
      expect(r.body.id).not.toBe(first.body.id);
    }
    expect(new Set(replies.map((r) => r.body.id)).size).toBe(1);
    expect(await jobsWithKey(a.tenant, 'shared-key')).toHaveLength(1);
    expect(await jobsWithKey(b.tenant, 'shared-key')).toHaveLength(1);
  });

  it('refuses a key that is empty, too long, not a string or holds NUL, creating nothing', async () => {
    for (const bad of ['', 'k'.repeat(201), 42, 'a\u0000b']) {
      const r = await a1('POST', '/v1/jobs', { type: 'test', payload: {}, dedupe_key: bad });
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(r.headers.get('content-type')).toContain('application/problem+json');
      expect(r.body.errors[0].path).toBe('dedupe_key');
    }
    const ok = await a1('POST', '/v1/jobs', spec('k'.repeat(200)));
    expect(ok.status).toBe(202);
  });

  it('searches by key (GET /v1/jobs?dedupe_key=), within the tenant', async () => {
    const mine = await a1('GET', '/v1/jobs?dedupe_key=shared-key');
    expect(mine.body.items.map((j: { tenant: string }) => j.tenant)).toEqual([a.tenant]);
    const theirs = await b1('GET', '/v1/jobs?dedupe_key=nightly');
    expect(theirs.body.items).toEqual([]);
  });

  it('is in the OpenAPI description and on the console: the job page shows the key, the search finds it', async () => {
    const doc = (await (await env.app.request('/openapi.json')).json()) as any;
    const post = doc.paths['/v1/jobs'].post;
    expect(post.responses['200'].headers['Dedupe-Hit']).toBeDefined();
    expect(post.requestBody.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/JobSubmission' });
    expect(doc.components.schemas.JobSubmission.properties.dedupe_key).toMatchObject({
      type: 'string',
      minLength: 1,
      maxLength: 200,
    });
    expect(doc.components.schemas.Job.properties.dedupe_key).toEqual({ type: 'string' });
    expect(doc.paths['/v1/jobs'].get.parameters.map((p: { name: string }) => p.name)).toContain('dedupe_key');
    const bulk = doc.paths['/v1/jobs/bulk'].post.responses['202'].content['application/json'].schema;
    expect(JSON.stringify(bulk)).toContain('deduplicated');

    const job = await a1('POST', '/v1/jobs', spec('console <key> & more'));
    const login = await env.app.request('/console/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ key: a.clientKey }).toString(),
    });
    const cookie = login.headers.get('set-cookie')!.split(';')[0];
    const page = await (await env.app.request(`/console/jobs/${job.body.id}`, { headers: { cookie } })).text();
    expect(page).toContain('<dt>Dedupe key</dt>');
    expect(page).toContain('<code>console &lt;key&gt; &amp; more</code>');
    const found = await (
      await env.app.request(`/console/jobs?${new URLSearchParams({ dedupe_key: 'console <key> & more' })}`, {
        headers: { cookie },
      })
    ).text();
    expect(found).toContain(`/console/jobs/${job.body.id}`);
  });

  it('beside Idempotency-Key: a replay answers its first job; a dedupe hit records no key', async () => {
    const live = await a1('POST', '/v1/jobs', spec('idem-mix'));
    expect(live.status).toBe(202);
    // A first request with a new Idempotency-Key whose dedupe_key is live: answered by the live job.
    const body = spec('idem-mix', 'other');
    const hit = await a2('POST', '/v1/jobs', body, { 'idempotency-key': 'req-1' });
    expect([hit.status, hit.headers.get('dedupe-hit'), hit.body.id]).toEqual([200, 'true', live.body.id]);
    // The same request again: its Idempotency-Key named no job, so it is a first request again, and a hit again.
    const again = await a1('POST', '/v1/jobs', body, { 'idempotency-key': 'req-1' });
    expect([again.status, again.body.id]).toEqual([200, live.body.id]);
    // A job created under an Idempotency-Key and a dedupe_key: the replay is the key's (no Dedupe-Hit header), a
    // different request with the same dedupe_key is a dedupe hit, a different body under the key is a 409.
    const created = await a1('POST', '/v1/jobs', spec('idem-2'), { 'idempotency-key': 'req-2' });
    expect(created.status).toBe(202);
    const replay = await a2('POST', '/v1/jobs', spec('idem-2'), { 'idempotency-key': 'req-2' });
    expect([replay.status, replay.headers.get('dedupe-hit'), replay.body.id]).toEqual([200, null, created.body.id]);
    const other = await a2('POST', '/v1/jobs', spec('idem-2', 'x'));
    expect([other.status, other.headers.get('dedupe-hit'), other.body.id]).toEqual([200, 'true', created.body.id]);
    const conflict = await a1('POST', '/v1/jobs', spec('idem-2', 'y'), { 'idempotency-key': 'req-2' });
    expect(conflict.status).toBe(409);

    // Once the live jobs end, the dedupe-hit request's Idempotency-Key creates a job (it had named none); the key
    // that created a job still replays it.
    const workers = await env.startWorkers(['test']);
    try {
      await jobInState(a1, live.body.id, ['succeeded']);
      await jobInState(a1, created.body.id, ['succeeded']);
      const after = await a1('POST', '/v1/jobs', body, { 'idempotency-key': 'req-1' });
      expect(after.status).toBe(202);
      expect(after.body.id).not.toBe(live.body.id);
      const replayed = await a1('POST', '/v1/jobs', spec('idem-2'), { 'idempotency-key': 'req-2' });
      expect([replayed.status, replayed.body.id, replayed.body.state]).toEqual([200, created.body.id, 'succeeded']);
      await jobInState(a1, after.body.id, ['succeeded']);
    } finally {
      await workers.close(1_000);
    }
  });

  it('once the live job ends, the key is free: the next submit creates a new job', async () => {
    const first = await a1('POST', '/v1/jobs', spec('free-again'));
    expect(first.status).toBe(202);
    let workers = await env.startWorkers(['test']);
    await jobInState(a1, first.body.id, ['succeeded']);
    // No worker while the burst arrives: the new job stays live throughout, so every submit meets it.
    await workers.close(1_000);
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a2 : a1)('POST', '/v1/jobs', spec('free-again', i))),
    );
    expect(replies.filter((r) => r.status === 202)).toHaveLength(1);
    const second = replies.find((r) => r.status === 202)!.body.id;
    expect(second).not.toBe(first.body.id);
    expect(new Set(replies.map((r) => r.body.id))).toEqual(new Set([second]));
    workers = await env.startWorkers(['test']);
    try {
      await jobInState(a1, second, ['succeeded']);
    } finally {
      await workers.close(1_000);
    }
    expect((await jobsWithKey(a.tenant, 'free-again')).map((j) => j.state)).toEqual(['succeeded', 'succeeded']);
  });
});
