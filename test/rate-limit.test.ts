// Issue 24, in process: the decisions of src/api/rate-limit.ts (the per-key rate, the tenant's jobs in flight, the image
// megapixel budget), its two middlewares on a small Hono app against real Redis and PostgreSQL. The principal comes
// from request headers and the handler answers the status a test asks for, so each decision is checked alone.
import type { ApiServices } from '../src/services.js';
import { Hono } from 'hono';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AuthEnv } from '../src/api/auth.js';
import { ProblemError, problemResponse } from '../src/api/errors.js';
import { rateLimitPerKey, tenantQuotas } from '../src/api/rate-limit.js';
import { jobsInFlight } from '../src/db/jobs.js';
import { loadConfig } from '../src/config.js';
import { saveFile } from '../src/files/index.js';
import { client, createTestEnv, silentLog, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let apps = 0;
beforeAll(async () => {
  env = await createTestEnv('rate_limit');
});
afterAll(() => env?.close());

/** The middlewares under some settings, each app with counters of its own (a Redis prefix of its own). */
function appWith(overrides: Record<string, string>) {
  const config = loadConfig({ ...env.env, QUEUE_PREFIX: `${env.config.QUEUE_PREFIX}_${++apps}`, ...overrides });
  const deps = { config, db: env.db, redis: env.redis, storage: env.storage, log: silentLog } as unknown as ApiServices;
  const app = new Hono<AuthEnv>();
  app.use('*', async (c, next) => {
    c.set('principal', {
      keyId: c.req.header('x-key') ?? 'k1',
      tenant: c.req.header('x-tenant') ?? 'none',
      role: (c.req.header('x-role') ?? 'client') as 'client',
    });
    await next();
  });
  app.use('*', rateLimitPerKey(deps));
  app.use('*', tenantQuotas(deps));
  // What the route would answer: 202 unless the test says otherwise.
  app.all('*', (c) => c.json({ ok: true }, Number(c.req.header('x-answer') ?? 202) as 202));
  app.onError((err, c) => {
    if (err instanceof ProblemError)
      return problemResponse(c, err.status, { slug: err.slug, detail: err.message }, err.headers);
    throw err;
  });
  return async (
    method: string,
    path: string,
    opts: { body?: unknown; raw?: string; key?: string; tenant?: string; role?: string; answer?: number } = {},
  ) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (opts.key) headers['x-key'] = opts.key;
    if (opts.tenant) headers['x-tenant'] = opts.tenant;
    if (opts.role) headers['x-role'] = opts.role;
    if (opts.answer) headers['x-answer'] = String(opts.answer);
    const res = await app.request(path, {
      method,
      headers,
      body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
  };
}

const rl = (h: Headers) => ['limit', 'remaining', 'reset', 'policy'].map((n) => h.get(`ratelimit-${n}`));

describe('rate limit per API key', () => {
  it('counts each key alone, says what is left, and answers 429 with Retry-After once the allowance is spent', async () => {
    const call = appWith({ RATE_LIMIT_PER_MINUTE: '3' });
    const seen: (string | null)[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await call('GET', '/v1/jobs', { key: 'a' });
      expect(r.status).toBe(202);
      const [limit, remaining, reset, policy] = rl(r.headers);
      expect([limit, policy]).toEqual(['3', '3;w=60']);
      expect(Number(reset)).toBeGreaterThanOrEqual(1);
      expect(Number(reset)).toBeLessThanOrEqual(60);
      seen.push(remaining);
    }
    expect(seen).toEqual(['2', '1', '0']);
    const limited = await call('GET', '/v1/jobs', { key: 'a' });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('content-type')).toBe('application/problem+json');
    expect(limited.body).toMatchObject({ status: 429, detail: 'At most 3 requests per minute per API key.' });
    expect(rl(limited.headers).slice(0, 2)).toEqual(['3', '0']);
    expect(rl(limited.headers)[3]).toBe('3;w=60');
    const retry = Number(limited.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(Number(rl(limited.headers)[2])).toBe(retry);
    // Another key has its own allowance.
    expect(rl((await call('GET', '/v1/jobs', { key: 'b' })).headers).slice(0, 2)).toEqual(['3', '2']);
  });

  it('with RATE_LIMIT_PER_MINUTE=0 counts nothing and adds no headers', async () => {
    const call = appWith({ RATE_LIMIT_PER_MINUTE: '0' });
    for (let i = 0; i < 3; i++) {
      const r = await call('GET', '/v1/jobs');
      expect(r.status).toBe(202);
      expect(r.headers.get('ratelimit-limit')).toBeNull();
    }
  });

  it("keeps a tenant quota's RateLimit-* headers on its 429 rather than the key's", async () => {
    const t = await tenantWithKeys(env);
    const call = appWith({ RATE_LIMIT_PER_MINUTE: '50', TENANT_MAX_IN_FLIGHT: '1' });
    const over = await call('POST', '/v1/jobs/bulk', { tenant: t.tenant, body: { jobs: [{}, {}] } });
    expect(over.status).toBe(429);
    expect(rl(over.headers).slice(0, 2)).toEqual(['1', '1']);
  });
});

describe('jobs in flight per tenant', () => {
  const submit = (api: ReturnType<typeof client>, n: number) =>
    api('POST', '/v1/jobs/bulk', { jobs: Array.from({ length: n }, () => ({ type: 'test', payload: {} })) });

  it('jobsInFlight counts only live jobs of the tenant, up to cap + 1', async () => {
    const a = await tenantWithKeys(env);
    const b = await tenantWithKeys(env);
    expect((await submit(client(env.app, a.clientKey), 4)).status).toBe(202);
    expect((await submit(client(env.app, b.clientKey), 1)).status).toBe(202);
    expect(await jobsInFlight(env.db, a.tenant, 10)).toBe(4);
    expect(await jobsInFlight(env.db, a.tenant, 2)).toBe(3);
    expect(await jobsInFlight(env.db, b.tenant, 10)).toBe(1);
    const [first] = await env.db.selectFrom('jobs').select('id').where('tenant', '=', a.tenant).execute();
    await env.db.updateTable('jobs').set({ state: 'succeeded' }).where('id', '=', first.id).execute();
    expect(await jobsInFlight(env.db, a.tenant, 10)).toBe(3);
  });

  it('refuses what would pass the cap with 429, Retry-After 5 and what is left; exactly at the cap passes', async () => {
    const t = await tenantWithKeys(env);
    expect((await submit(client(env.app, t.clientKey), 2)).status).toBe(202);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '3' });
    const over = await call('POST', '/v1/jobs/bulk', { tenant: t.tenant, body: { jobs: [{}, {}] } });
    expect(over.status).toBe(429);
    expect(over.body.detail).toBe('Your tenant has 2 jobs queued or running; the limit is 3. Wait for some to finish.');
    expect(over.headers.get('retry-after')).toBe('5');
    expect(rl(over.headers).slice(0, 2)).toEqual(['3', '1']);
    // 2 + 1 is the cap itself; the handler's 400 is not an accepted job, so the count stays 2.
    expect((await call('POST', '/v1/jobs', { tenant: t.tenant, body: {}, answer: 400 })).status).toBe(400);
    expect((await call('POST', '/v1/jobs', { tenant: t.tenant, body: {} })).status).toBe(202);
    // Operators are exempt; reads and other tenants are not counted against it.
    expect((await call('POST', '/v1/jobs', { tenant: t.tenant, role: 'operator', body: { jobs: [] } })).status).toBe(
      202,
    );
    expect((await call('GET', '/v1/jobs', { tenant: t.tenant })).status).toBe(202);
    expect((await call('POST', '/v1/jobs', { tenant: 'another', body: {} })).status).toBe(202);
  });

  it('counts a retry and a recommendation as one job each, and other routes or malformed bodies as none', async () => {
    const t = await tenantWithKeys(env);
    expect((await submit(client(env.app, t.clientKey), 1)).status).toBe(202);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '1' });
    const as = (path: string, body?: unknown, raw?: string) => call('POST', path, { tenant: t.tenant, body, raw });
    expect((await as('/v1/jobs/123/retry')).status).toBe(429);
    expect((await as('/v1/users/u1/recommendations')).status).toBe(429);
    expect((await as('/v1/jobs', {})).status).toBe(429);
    expect((await as('/v1/jobs/bulk', { jobs: [{}] })).status).toBe(429);
    // None of these asks for a job to run.
    expect((await as('/v1/jobs/1/2/retry')).status).toBe(202);
    expect((await as('/x/v1/jobs/1/retry')).status).toBe(202);
    expect((await as('/v1/jobs/1/retry/x')).status).toBe(202);
    expect((await as('/v1/users/u1/recommendations/x')).status).toBe(202);
    expect((await as('/v1/files', {})).status).toBe(202);
    expect((await as('/v1/jobs', undefined, '{not json')).status).toBe(202);
    expect((await as('/v1/jobs/bulk', { jobs: 'all' })).status).toBe(202);
    expect((await as('/v1/jobs/bulk', { jobs: [] })).status).toBe(202);
  });

  it('adds the jobs it accepted to the figure it keeps, until a refusal recounts', async () => {
    const t = await tenantWithKeys(env);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '3' });
    const one = () => call('POST', '/v1/jobs', { tenant: t.tenant, body: {} });
    const statuses = [];
    // The clock stands still, so the figure cannot age past its TTL (a recount behind it) on a loaded machine.
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      // Counted once (0 live); the handler here creates nothing, so only what it accepted grows the figure.
      expect((await one()).status).toBe(202);
      expect((await submit(client(env.app, t.clientKey), 3)).status).toBe(202);
      for (let i = 0; i < 3; i++) statuses.push((await one()).status);
    } finally {
      vi.useRealTimers();
    }
    // 1 and 2 accepted fit the cap from memory; at 3 the refusal recounts and finds the 3 live jobs.
    expect(statuses).toEqual([202, 202, 429]);
  });
});

describe('image megapixels per tenant per minute', () => {
  let t: Awaited<ReturnType<typeof tenantWithKeys>>;
  let big: string; // 1000 × 1000: 1 MP
  let other: string; // another tenant's 1 MP image
  let text: string;
  beforeAll(async () => {
    t = await tenantWithKeys(env);
    const o = await tenantWithKeys(env);
    const png = await sharp({ create: { width: 1000, height: 1000, channels: 3, background: '#123' } })
      .png()
      .toBuffer();
    big = (await saveFile(env.db, env.storage, { tenant: t.tenant, body: png, contentType: 'image/png' })).id;
    other = (await saveFile(env.db, env.storage, { tenant: o.tenant, body: png, contentType: 'image/png' })).id;
    text = (
      await saveFile(env.db, env.storage, { tenant: t.tenant, body: Buffer.from('hello'), contentType: 'text/plain' })
    ).id;
  });
  const image = (file_id: unknown, variants?: number) => ({
    type: 'image',
    payload: { file_id, ...(variants === undefined ? {} : { variants: Array.from({ length: variants }, () => ({})) }) },
  });

  it('charges source megapixels × variants, refuses past the budget with 429 and its headers, and refunds refusals', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '5' });
    const post = (body: unknown, answer?: number) => call('POST', '/v1/jobs', { tenant: t.tenant, body, answer });
    expect((await post(image(big, 2))).status).toBe(202); // 2
    expect((await post(image(big))).status).toBe(202); // 3 variants by default: 5
    const over = await post(image(big, 1));
    expect(over.status).toBe(429);
    expect(over.body.detail).toBe('Image work is limited to 5 megapixels per minute per tenant; this request needs 1.');
    expect(rl(over.headers)[0]).toBe('5');
    expect(rl(over.headers)[1]).toBe('0');
    expect(rl(over.headers)[3]).toBe('5;w=60');
    const retry = Number(over.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(Number(rl(over.headers)[2])).toBe(retry);
    // Operators are exempt, and reads cost nothing.
    expect((await call('POST', '/v1/jobs', { tenant: t.tenant, role: 'operator', body: image(big, 1) })).status).toBe(
      202,
    );
  });

  it('refunds a request the route did not accept, and keeps what an accepted one cost', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '4' });
    const post = (body: unknown, answer?: number) => call('POST', '/v1/jobs', { tenant: t.tenant, body, answer });
    expect((await post(image(big, 4), 400)).status).toBe(400);
    expect((await post(image(big, 4), 302)).status).toBe(302);
    expect((await post(image(big, 3), 299)).status).toBe(299);
    expect((await post(image(big, 1))).status).toBe(202);
    expect((await post(image(big, 1))).status).toBe(429);
  });

  it('refunds the points a refused request took', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '3' });
    const post = (body: unknown) => call('POST', '/v1/jobs', { tenant: t.tenant, body });
    expect((await post(image(big, 2))).status).toBe(202);
    expect((await post(image(big, 2))).status).toBe(429);
    expect((await post(image(big, 1))).status).toBe(202);
  });

  it('answers 422 for more than a whole budget, counting at most 8 variants and at least 1, over a bulk', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '8' });
    const post = (path: string, body: unknown) => call('POST', path, { tenant: t.tenant, body });
    const tooMuch = await post('/v1/jobs/bulk', { jobs: [image(big, 5), image(big, 4)] });
    expect(tooMuch.status).toBe(422);
    expect(tooMuch.body.detail).toBe(
      'These image jobs need 9 megapixels of work; your tenant may submit 8 per minute. Submit fewer images or variants at once.',
    );
    // 20 variants count as 8, the whole budget; then none is left for an image with no variants (counted as 1).
    expect((await post('/v1/jobs', image(big, 20))).status).toBe(202);
    expect((await post('/v1/jobs', image(big, 0))).status).toBe(429);
  });

  it("charges nothing for what is not this tenant's image: another tenant's, a missing one, text, a bad id", async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '1' });
    const post = (body: unknown) => call('POST', '/v1/jobs', { tenant: t.tenant, body });
    expect((await post(image(big, 1))).status).toBe(202);
    for (const id of [other, 'f_missing', text, 'x'.repeat(65), 42])
      expect((await post(image(id, 1))).status, String(id)).toBe(202);
    // Not an image job: free whatever its payload says.
    expect((await post({ type: 'video', payload: { file_id: big } })).status).toBe(202);
    expect((await post(image(big, 1))).status).toBe(429);
  });
});
