// Issue 24, in process: the decisions of src/api/rate-limit.ts (the per-key rate, the tenant's jobs in flight, the image
// megapixel budget), its two middlewares on a small Hono app against real Redis and PostgreSQL. The principal comes
// from request headers and the handler answers the status a test asks for, so each decision is checked alone. Light on
// purpose (a private database, no app): Stryker runs this file once per mutant (`npm run test:mutation -- rate-limit`).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import { Redis } from 'ioredis';
import pino from 'pino';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { AuthEnv } from '../src/api/auth.js';
import type { ApiServices } from '../src/services.js';
import { ProblemError, problemResponse } from '../src/api/errors.js';
import { rateLimitPerKey, tenantQuotas } from '../src/api/rate-limit.js';
import { jobsInFlight } from '../src/db/jobs.js';
import { loadConfig } from '../src/config.js';
import { saveFile } from '../src/files/index.js';
import type { Db } from '../src/db/index.js';
import * as ledger from '../src/db/jobs.js';
import { newId } from '../src/ids.js';
import { redisOptions } from '../src/queues/redis.js';
import { DirectoryStorage, type Storage } from '../src/files/storage.js';
import { type UnitDb, unitDb, unitDbName } from './support/unit-db.js';

const name = unitDbName('rate_limit');
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
// Counters live in Redis for a minute or two: a prefix of this run's own, though Stryker reuses the database's name.
const prefix = `t_${name}_${randomBytes(4).toString('hex')}`;
const dir = mkdtempSync(path.join(os.tmpdir(), 'rate-limit-'));
const storage = new DirectoryStorage(dir);
const log = pino({ level: 'silent' });
let unit: UnitDb;
let db: Db;
let redis: Redis;
let tenants = 0;
let apps = 0;

beforeAll(async () => {
  unit = await unitDb(name, ['seed']);
  db = unit.db;
  redis = new Redis(redisUrl);
  await redis.ping(); // answered once the connection is ready: the counters sync only on a ready connection
});
// The clock stands still in every test (Date only; timers run): a minute's window cannot end halfway through a test,
// and the in-flight figure cannot age into a recount behind it, however loaded the machine.
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
});
afterEach(() => {
  vi.useRealTimers();
});
afterAll(async () => {
  redis?.disconnect();
  await unit?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A new tenant, with `live` jobs queued. */
async function tenant(live = 0): Promise<string> {
  const id = `t${++tenants}`;
  await db
    .insertInto('tenants')
    .values({ id, webhook_secret: `whsec_${id}` })
    .execute();
  await addJobs(id, live);
  return id;
}
async function addJobs(t: string, n: number) {
  const row = () => ({
    id: newId(),
    tenant: t,
    type: 'test',
    state: 'queued' as const,
    priority: 'normal' as const,
    payload: '{}',
    max_attempts: 1,
  });
  return ledger.insertJobs(
    db,
    Array.from({ length: n }, () => row()),
  );
}

/**
 * The middlewares under some settings, each app with counters of its own (a Redis prefix of its own) unless it is
 * given another app's prefix: two apps with one prefix are two API processes of one deployment.
 */
function appWith(overrides: Record<string, string>, opts: { redis?: Redis; storage?: Storage } = {}) {
  const config = loadConfig({ REDIS_URL: redisUrl, QUEUE_PREFIX: `${prefix}_${++apps}`, ...overrides });
  const deps = {
    config,
    db,
    redis: opts.redis ?? redis,
    storage: opts.storage ?? storage,
    log,
  } as unknown as ApiServices;
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
    return c.json({ crashed: String(err) }, 500);
  });
  const call = async (
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
  return Object.assign(call, { prefix: config.QUEUE_PREFIX });
}

const rl = (h: Headers) => ['limit', 'remaining', 'reset', 'policy'].map((n) => h.get(`ratelimit-${n}`));
const problemType = (slug: string) => `https://movie-jobs.dev/problems/${slug}`;

/** Polls until `check` holds (a Redis sync landing), failing after 5 s. */
async function until(check: () => Promise<boolean>) {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('condition never held');
}

/** A Redis client for a server that is not there, with the options the API's own (producer) connection has. */
function redisDown(): Redis {
  const down = new Redis({ ...redisOptions('producer'), host: '127.0.0.1', port: 1 });
  down.on('error', () => {});
  return down;
}

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
    expect(limited.body).toMatchObject({
      type: problemType('rate-limited'),
      status: 429,
      detail: 'At most 3 requests per minute per API key.',
    });
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
    const t = await tenant();
    const call = appWith({ RATE_LIMIT_PER_MINUTE: '50', TENANT_MAX_IN_FLIGHT: '1' });
    const over = await call('POST', '/v1/jobs/bulk', { tenant: t, body: { jobs: [{}, {}] } });
    expect(over.status).toBe(429);
    expect(rl(over.headers).slice(0, 2)).toEqual(['1', '1']);
  });

  it("shares a key's allowance among the API processes of one deployment, in Redis under its QUEUE_PREFIX", async () => {
    const one = appWith({ RATE_LIMIT_PER_MINUTE: '2' });
    const two = appWith({ RATE_LIMIT_PER_MINUTE: '2', QUEUE_PREFIX: one.prefix });
    const elsewhere = appWith({ RATE_LIMIT_PER_MINUTE: '2' });
    // Read on the apps' own Redis connection: a read that sees an app's INCRBY gets its answer after the app got its
    // own, so the app has taken in the total by then.
    const counted = async (p: string) => {
      const keys = await redis.keys(`${p}:rl:key:*`);
      return keys.length ? (await redis.mget(keys)).reduce((n, v) => n + Number(v), 0) : 0;
    };
    expect((await one('GET', '/v1/jobs')).status).toBe(202);
    await until(async () => (await counted(one.prefix)) === 1);
    // The other process answers from its own view until its sync tells it what the first one counted.
    expect(rl((await two('GET', '/v1/jobs')).headers)[1]).toBe('1');
    await until(async () => (await counted(one.prefix)) === 2);
    expect((await two('GET', '/v1/jobs')).status).toBe(429);
    // Another deployment's counts are its own.
    expect((await elsewhere('GET', '/v1/jobs')).status).toBe(202);
    await until(async () => (await counted(elsewhere.prefix)) === 1);
    expect(rl((await elsewhere('GET', '/v1/jobs')).headers)[1]).toBe('0');
  });
});

describe('jobs in flight per tenant', () => {
  it('jobsInFlight counts only live jobs of the tenant, up to cap + 1', async () => {
    const a = await tenant(4);
    const b = await tenant(1);
    expect(await jobsInFlight(db, a, 10)).toBe(4);
    expect(await jobsInFlight(db, a, 2)).toBe(3);
    expect(await jobsInFlight(db, b, 10)).toBe(1);
    expect(await jobsInFlight(db, await tenant(), 10)).toBe(0);
    const [first] = await db.selectFrom('jobs').select('id').where('tenant', '=', a).execute();
    await db.updateTable('jobs').set({ state: 'succeeded' }).where('id', '=', first.id).execute();
    expect(await jobsInFlight(db, a, 10)).toBe(3);
  });

  it('refuses what would pass the cap with 429, Retry-After 5 and what is left; exactly at the cap passes', async () => {
    const t = await tenant(2);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '3' });
    const over = await call('POST', '/v1/jobs/bulk', { tenant: t, body: { jobs: [{}, {}] } });
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({
      type: problemType('rate-limited'),
      detail: 'Your tenant has 2 jobs queued or running; the limit is 3. Wait for some to finish.',
    });
    expect(over.headers.get('retry-after')).toBe('5');
    expect(rl(over.headers).slice(0, 2)).toEqual(['3', '1']);
    // 2 + 1 is the cap itself; the handler's 400 is not an accepted job, so the count stays 2.
    expect((await call('POST', '/v1/jobs', { tenant: t, body: {}, answer: 400 })).status).toBe(400);
    expect((await call('POST', '/v1/jobs', { tenant: t, body: {} })).status).toBe(202);
    // Operators are exempt; reads and other tenants are not counted against it.
    expect((await call('POST', '/v1/jobs', { tenant: t, role: 'operator', body: { jobs: [] } })).status).toBe(202);
    expect((await call('GET', '/v1/jobs', { tenant: t })).status).toBe(202);
    expect((await call('POST', '/v1/jobs', { tenant: await tenant(), body: {} })).status).toBe(202);
  });

  it('counts a retry and a recommendation as one job each, and other routes or malformed bodies as none', async () => {
    const t = await tenant(1);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '1' });
    const as = (path: string, body?: unknown, raw?: string) => call('POST', path, { tenant: t, body, raw });
    expect((await as('/v1/jobs/123/retry')).status).toBe(429);
    expect((await as('/v1/users/u1/recommendations')).status).toBe(429);
    expect((await as('/v1/jobs', {})).status).toBe(429);
    expect((await as('/v1/jobs/bulk', { jobs: [{}] })).status).toBe(429);
    expect((await as('/v1/jobs/bulk', { jobs: [null] })).status).toBe(429);
    // Once the tenant has room, each passes (no image in them to charge).
    const free = await tenant();
    for (const p of ['/v1/jobs/123/retry', '/v1/users/u1/recommendations'])
      expect((await call('POST', p, { tenant: free })).status, p).toBe(202);
  });

  it('lets a tenant over its cap do everything that starts no job: cancel, upload, read, send what validation refuses', async () => {
    // The cap was lowered, or other API processes accepted jobs meanwhile: 2 live, cap 1.
    const t = await tenant(2);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '1' });
    const as = (path: string, body?: unknown, raw?: string) => call('POST', path, { tenant: t, body, raw });
    expect((await as('/v1/jobs', {})).status).toBe(429);
    for (const p of [
      '/v1/jobs/123/cancel',
      '/v1/jobs/1/2/retry',
      '/x/v1/jobs/1/retry',
      '/v1/jobs/1/retry/x',
      '/x/v1/users/u1/recommendations',
      '/v1/users/u1/recommendations/x',
    ])
      expect((await as(p)).status, p).toBe(202);
    expect((await as('/v1/files', { jobs: [{}, {}] })).status).toBe(202);
    expect((await call('GET', '/v1/users/u1/recommendations', { tenant: t })).status).toBe(202);
    expect((await call('DELETE', '/v1/jobs/123/retry', { tenant: t })).status).toBe(202);
    // Bodies that ask for no job: validation answers them.
    for (const raw of ['{not json', 'null', '{"jobs":"all"}', '{"jobs":[]}', '{}'])
      expect((await as('/v1/jobs/bulk', undefined, raw)).status, raw).toBe(202);
    expect((await as('/v1/jobs', undefined, '{not json')).status).toBe(202);
  });

  it('with TENANT_MAX_IN_FLIGHT=0 counts nothing', async () => {
    const t = await tenant(3);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '0' });
    for (let i = 0; i < 2; i++) {
      const r = await call('POST', '/v1/jobs/bulk', { tenant: t, body: { jobs: [{}, {}] } });
      expect(r.status).toBe(202);
      expect(r.headers.get('ratelimit-limit')).toBe('6000'); // the key's, not the tenant's
    }
  });

  it('adds the jobs it accepted to the figure it keeps, and only those, until a refusal recounts', async () => {
    const t = await tenant();
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '3' });
    const post = (answer?: number, jobs = 1) =>
      call('POST', '/v1/jobs/bulk', { tenant: t, body: { jobs: Array(jobs).fill({}) }, answer });
    const statuses = [];
    // Counted once (0 live); the handler here creates nothing, so only what it accepted grows the figure.
    expect((await post()).status).toBe(202); // figure 1
    await addJobs(t, 3);
    // Refused by the route: not added (1 + 2 fits the cap, so the figure in memory decides).
    expect((await post(400, 2)).status).toBe(400);
    for (let i = 0; i < 3; i++) statuses.push((await post()).status);
    // 1 and 2 accepted fit the cap from memory; at 3 the refusal recounts and finds the 3 live jobs.
    expect(statuses).toEqual([202, 202, 429]);
  });

  it('recounts before refusing: jobs that finished since the last count free their slots at once', async () => {
    const t = await tenant(2);
    const call = appWith({ TENANT_MAX_IN_FLIGHT: '3' });
    const bulk = (n: number) =>
      call('POST', '/v1/jobs/bulk', { tenant: t, body: { jobs: Array(n).fill({}) }, answer: 400 });
    expect((await bulk(1)).status).toBe(400); // counted: 2
    await db.updateTable('jobs').set({ state: 'succeeded' }).where('tenant', '=', t).execute();
    // 2 + 2 would pass the cap by the figure in memory; the fresh count (0) lets it through.
    expect((await bulk(2)).status).toBe(400);
    expect((await bulk(3)).status).toBe(400);
    expect((await bulk(4)).status).toBe(429);
  });
});

describe('image megapixels per tenant per minute', () => {
  let t: string;
  let big: string; // 1000 × 1000: 1 MP
  let other: string; // another tenant's 1 MP image
  let text: string;
  beforeAll(async () => {
    t = await tenant();
    const o = await tenant();
    const png = await sharp({ create: { width: 1000, height: 1000, channels: 3, background: '#123' } })
      .png()
      .toBuffer();
    big = (await saveFile(db, storage, { tenant: t, body: png, contentType: 'image/png' })).id;
    other = (await saveFile(db, storage, { tenant: o, body: png, contentType: 'image/png' })).id;
    text = (await saveFile(db, storage, { tenant: t, body: Buffer.from('hello'), contentType: 'text/plain' })).id;
  });
  const image = (file_id: unknown, variants?: number) => ({
    type: 'image',
    payload: { file_id, ...(variants === undefined ? {} : { variants: Array.from({ length: variants }, () => ({})) }) },
  });

  it('charges source megapixels × variants, refuses past the budget with 429 and its headers, and refunds refusals', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '5' });
    const post = (body: unknown, answer?: number) => call('POST', '/v1/jobs', { tenant: t, body, answer });
    expect((await post(image(big, 2))).status).toBe(202); // 2
    expect((await post(image(big))).status).toBe(202); // 3 variants by default: 5
    const over = await post(image(big, 1));
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({
      type: problemType('rate-limited'),
      detail: 'Image work is limited to 5 megapixels per minute per tenant; this request needs 1.',
    });
    expect(rl(over.headers)[0]).toBe('5');
    expect(rl(over.headers)[1]).toBe('0');
    expect(rl(over.headers)[3]).toBe('5;w=60');
    const retry = Number(over.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(Number(rl(over.headers)[2])).toBe(retry);
    // Operators are exempt, and reads cost nothing.
    expect((await call('POST', '/v1/jobs', { tenant: t, role: 'operator', body: image(big, 1) })).status).toBe(202);
  });

  it('says on a refusal what is left of the budget, which a smaller request may still use', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '5' });
    const post = (variants: number) => call('POST', '/v1/jobs', { tenant: t, body: image(big, variants) });
    expect((await post(2)).status).toBe(202);
    const over = await post(4);
    expect(over.status).toBe(429);
    expect(over.body.detail).toBe('Image work is limited to 5 megapixels per minute per tenant; this request needs 4.');
    expect(rl(over.headers).slice(0, 2)).toEqual(['5', '3']);
    expect((await post(3)).status).toBe(202);
  });

  it('refunds a request the route did not accept, and keeps what an accepted one cost', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '4' });
    const post = (body: unknown, answer?: number) => call('POST', '/v1/jobs', { tenant: t, body, answer });
    expect((await post(image(big, 4), 400)).status).toBe(400);
    expect((await post(image(big, 4), 302)).status).toBe(302);
    expect((await post(image(big, 4), 300)).status).toBe(300);
    expect((await post(image(big, 3), 299)).status).toBe(299);
    expect((await post(image(big, 1))).status).toBe(202);
    expect((await post(image(big, 1))).status).toBe(429);
  });

  it('refunds the points a refused request took', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '3' });
    const post = (body: unknown) => call('POST', '/v1/jobs', { tenant: t, body });
    expect((await post(image(big, 2))).status).toBe(202);
    expect((await post(image(big, 2))).status).toBe(429);
    expect((await post(image(big, 1))).status).toBe(202);
  });

  it('answers 422 for more than a whole budget, counting at most 8 variants and at least 1, over a bulk', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '8' });
    const post = (path: string, body: unknown) => call('POST', path, { tenant: t, body });
    const tooMuch = await post('/v1/jobs/bulk', { jobs: [image(big, 5), image(big, 4)] });
    expect(tooMuch.status).toBe(422);
    expect(tooMuch.body).toMatchObject({
      type: problemType('over-quota'),
      detail:
        'These image jobs need 9 megapixels of work; your tenant may submit 8 per minute. Submit fewer images or variants at once.',
    });
    // 20 variants count as 8, the whole budget; then none is left for an image with no variants (counted as 1).
    expect((await post('/v1/jobs', image(big, 20))).status).toBe(202);
    expect((await post('/v1/jobs', image(big, 0))).status).toBe(429);
  });

  it("charges nothing for what is not this tenant's image, yet all that is in one bulk", async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '2' });
    const post = (body: unknown) => call('POST', '/v1/jobs', { tenant: t, body });
    // Another tenant's image, a missing one, a text file, strings that are no file id (one PostgreSQL refuses), no id.
    for (const id of [other, 'file_missing0000', text, 'x'.repeat(65), 'file_\u0000abcdefghij', 42, null])
      expect((await post(image(id, 1))).status, String(id)).toBe(202);
    // Not an image job, or one without a payload: free whatever else it says.
    expect((await post({ type: 'video', payload: { file_id: big } })).status).toBe(202);
    expect((await post({ type: 'image' })).status).toBe(202);
    // A bulk charges its images even beside one that costs nothing: 1 of 2.
    const mixed = { jobs: [image(text, 1), image(big, 1), null] };
    expect((await call('POST', '/v1/jobs/bulk', { tenant: t, body: mixed })).status).toBe(202);
    expect((await post(image(big, 2))).status).toBe(429);
    expect((await post(image(big, 1))).status).toBe(202);
  });

  it('reads the image through a stream where the storage has no local path (an object store)', async () => {
    const streamed: Storage = {
      put: (key, body, o) => storage.put(key, body, o),
      get: (key) => storage.get(key),
      delete: (key) => storage.delete(key),
      exists: (key) => storage.exists(key),
    };
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '3' }, { storage: streamed });
    const post = (variants: number) => call('POST', '/v1/jobs', { tenant: t, body: image(big, variants) });
    expect((await post(2)).status).toBe(202);
    expect((await post(2)).status).toBe(429);
    expect((await post(1)).status).toBe(202);
  });

  it('with TENANT_IMAGE_MEGAPIXELS_PER_MINUTE=0 charges nothing', async () => {
    const call = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '0' });
    for (let i = 0; i < 2; i++)
      expect((await call('POST', '/v1/jobs', { tenant: t, body: image(big, 8) })).status).toBe(202);
  });

  it('goes on counting in each process while Redis is down: requests are answered, and refused past each limit', async () => {
    const down = redisDown();
    try {
      const perKey = appWith({ RATE_LIMIT_PER_MINUTE: '2', TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '0' }, { redis: down });
      expect(rl((await perKey('GET', '/v1/jobs')).headers).slice(0, 2)).toEqual(['2', '1']);
      expect((await perKey('GET', '/v1/jobs')).status).toBe(202);
      expect((await perKey('GET', '/v1/jobs')).status).toBe(429);

      const images = appWith({ RATE_LIMIT_PER_MINUTE: '0', TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '5' }, { redis: down });
      const post = (variants: number) => images('POST', '/v1/jobs', { tenant: t, body: image(big, variants) });
      expect((await post(2)).status).toBe(202);
      expect((await post(3)).status).toBe(202);
      const over = await post(1);
      expect(over.status).toBe(429);
      expect(rl(over.headers).slice(0, 2)).toEqual(['5', '0']);
    } finally {
      down.disconnect();
    }
  });
});
