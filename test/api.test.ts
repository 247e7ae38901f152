// The jobs API in process: auth, tenancy, idempotency, validation, limits, pagination, dependencies down.
import { connect } from 'node:net';
import { serve } from '@hono/node-server';
import getPort from 'get-port';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createApp } from '../src/api/app.js';
import { loadConfig } from '../src/config.js';
import { createDb } from '../src/db/index.js';
import { createRegistry, defineJob } from '../src/jobs/index.js';
import { Queues } from '../src/queues/index.js';
import { createRedis } from '../src/queues/redis.js';
import { client, createTestEnv, silentLog, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let a: Awaited<ReturnType<typeof tenantWithKeys>>;
let b: Awaited<ReturnType<typeof tenantWithKeys>>;
let apiA: ReturnType<typeof client>;
let apiB: ReturnType<typeof client>;
let operatorB: ReturnType<typeof client>;

beforeAll(async () => {
  env = await createTestEnv('api');
  [a, b] = await Promise.all([tenantWithKeys(env), tenantWithKeys(env)]);
  apiA = client(env.app, a.clientKey);
  apiB = client(env.app, b.clientKey);
  operatorB = client(env.app, b.operatorKey);
});
afterAll(() => env?.close());

const isProblem = (r: { headers: Headers; body: any }, status: number) => {
  expect(r.headers.get('content-type')).toContain('application/problem+json');
  expect(r.body).toMatchObject({
    status,
    type: expect.any(String),
    title: expect.any(String),
    detail: expect.any(String),
  });
  expect(JSON.stringify(r.body)).not.toMatch(/at .*\.ts:\d+/); // no stack traces
};

const countJobs = async () =>
  Number(
    (
      await env.db
        .selectFrom('jobs')
        .select((e) => e.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );

describe('authentication', () => {
  it('answers 401 with WWW-Authenticate without a key or with a bad one', async () => {
    for (const r of [await client(env.app)('GET', '/v1/jobs'), await client(env.app, 'mj_nope')('GET', '/v1/jobs')]) {
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/Bearer/);
      isProblem(r, 401);
    }
  });

  it('accepts HTTP Basic with the key as the password', async () => {
    const r = await env.app.request('/v1/jobs', {
      headers: { authorization: `Basic ${Buffer.from(`any:${a.clientKey}`).toString('base64')}` },
    });
    expect(r.status).toBe(200);
  });

  it('refuses a revoked key', async () => {
    const { createKey, revokeKey } = await import('../src/auth/keys.js');
    const k = await createKey(env.db, env.config.API_KEY_SECRET, a.tenant, 'client');
    await revokeKey(env.db, k.id);
    expect((await client(env.app, k.key)('GET', '/v1/jobs')).status).toBe(401);
  });

  it('leaves the open routes open', async () => {
    expect((await env.app.request('/healthz')).status).toBe(200);
    expect((await env.app.request('/readyz')).status).toBe(200);
    expect((await env.app.request('/')).status).toBe(200);
    const doc = (await (await env.app.request('/openapi.json')).json()) as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/jobs',
        '/v1/jobs/bulk',
        '/v1/jobs/{id}',
        '/v1/jobs/{id}/cancel',
        '/v1/jobs/{id}/retry',
      ]),
    );
    expect((await env.app.request('/docs')).status).toBe(200);
  });
});

describe('tenancy', () => {
  it("answers 404 for another tenant's job on every job route, and lets an operator see it", async () => {
    const r = await apiA('POST', '/v1/jobs', { type: 'test', payload: {} });
    expect(r.status).toBe(202);
    for (const [m, p] of [
      ['GET', ''],
      ['POST', '/cancel'],
      ['POST', '/retry'],
    ] as const) {
      const other = await apiB(m, `/v1/jobs/${r.body.id}${p}`);
      expect(other.status).toBe(404);
      isProblem(other, 404);
    }
    expect((await apiB('GET', '/v1/jobs')).body.items.map((j: { id: string }) => j.id)).not.toContain(r.body.id);
    const op = await operatorB('GET', `/v1/jobs/${r.body.id}`);
    expect(op.status).toBe(200);
    expect(op.body.tenant).toBe(a.tenant);
  });
});

describe('idempotency', () => {
  it('answers the first job for a replay and 409 for another body with the same key', async () => {
    const body = { type: 'test', payload: { value: 1 } };
    const first = await apiA('POST', '/v1/jobs', body, { 'idempotency-key': 'k-1' });
    const again = await apiA('POST', '/v1/jobs', body, { 'idempotency-key': 'k-1' });
    expect(first.status).toBe(202);
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first.body.id);
    const other = await apiA('POST', '/v1/jobs', { type: 'test', payload: { value: 2 } }, { 'idempotency-key': 'k-1' });
    expect(other.status).toBe(409);
    isProblem(other, 409);
    // Keys are per tenant.
    const b1 = await apiB('POST', '/v1/jobs', body, { 'idempotency-key': 'k-1' });
    expect(b1.status).toBe(202);
    expect(b1.body.id).not.toBe(first.body.id);
    // At most 200 characters, and documented.
    const long = await apiA('POST', '/v1/jobs', body, { 'idempotency-key': 'k'.repeat(201) });
    expect(long.status).toBe(400);
    expect(long.body.errors).toEqual([{ path: 'idempotency-key', message: expect.any(String) }]);
    const doc = (await (await env.app.request('/openapi.json')).json()) as {
      paths: Record<string, { post: { parameters?: { name: string; in: string }[] } }>;
    };
    expect(doc.paths['/v1/jobs'].post.parameters).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'Idempotency-Key', in: 'header' })]),
    );
  });

  it('frees a key after 24 hours for a new job', async () => {
    const body = { type: 'test', payload: { value: 'old' } };
    const first = await apiA('POST', '/v1/jobs', body, { 'idempotency-key': 'k-old' });
    await env.db
      .updateTable('jobs')
      .set({ created_at: new Date(Date.now() - 25 * 3600 * 1000) })
      .where('id', '=', first.body.id)
      .execute();
    const later = await apiA(
      'POST',
      '/v1/jobs',
      { type: 'test', payload: { value: 'new' } },
      { 'idempotency-key': 'k-old' },
    );
    expect(later.status).toBe(202);
    expect(later.body.id).not.toBe(first.body.id);
  });

  it('makes one job of concurrent requests with the same key', async () => {
    const body = { type: 'test', payload: { value: 'race' } };
    const replies = await Promise.all(
      Array.from({ length: 8 }, () => apiA('POST', '/v1/jobs', body, { 'idempotency-key': 'race-1' })),
    );
    expect(new Set(replies.map((r) => r.body.id)).size).toBe(1);
    expect(replies.filter((r) => r.status === 202)).toHaveLength(1);
  });
});

describe('bad input', () => {
  const cases: [string, string, unknown, number][] = [
    ['POST', '/v1/jobs', '{not json', 400],
    ['POST', '/v1/jobs', '[]', 400],
    ['POST', '/v1/jobs', {}, 400],
    ['POST', '/v1/jobs', { type: 'nope', payload: {} }, 400],
    ['POST', '/v1/jobs', { type: 'test', payload: 'x' }, 400],
    ['POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: -1 } }, 400],
    ['POST', '/v1/jobs', { type: 'test', payload: {}, priority: 'urgent' }, 400],
    ['POST', '/v1/jobs', { type: 'test', payload: {}, run_at: 'tomorrow' }, 400],
    ['POST', '/v1/jobs', { type: 'test', payload: {}, callback_url: 'ftp://x' }, 400],
    ['POST', '/v1/jobs', { type: 'test', payload: {}, attempts: 99 }, 400],
    ['POST', '/v1/jobs', { type: 'test', payload: {}, tenant: 'other' }, 400],
    ['POST', '/v1/jobs/bulk', { jobs: [] }, 400],
    ['POST', '/v1/jobs/bulk', { jobs: 'x' }, 400],
    ['GET', '/v1/jobs?limit=0', undefined, 400],
    ['GET', '/v1/jobs?limit=201', undefined, 400],
    ['GET', '/v1/jobs?state=lost', undefined, 400],
    ['GET', '/v1/jobs?cursor=%%%', undefined, 400],
    ['GET', '/v1/jobs/not-an-id', undefined, 404],
    ['GET', "/v1/jobs/1'; drop table jobs;--", undefined, 404],
    ['POST', '/v1/jobs/00000000-0000-7000-8000-000000000000/cancel', undefined, 404],
    ['POST', '/v1/jobs/00000000-0000-7000-8000-000000000000/retry', undefined, 404],
    ['DELETE', '/v1/jobs', undefined, 405], // a method the path does not take: 405 with Allow
  ];
  it.each(cases)('%s %s %j → %i problem+json', async (method, path, body, status) => {
    const r = await apiA(method, path, body, typeof body === 'string' ? { 'content-type': 'application/json' } : {});
    expect(r.status).toBe(status);
    isProblem(r, status);
  });

  it('answers 415 for a body that is not declared as JSON', async () => {
    const r = await apiA('POST', '/v1/jobs', 'type=test', { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.status).toBe(415);
    isProblem(r, 415);
  });

  it('names each bad field', async () => {
    const r = await apiA('POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: 'x', fail_times: 99 } });
    expect(r.body.errors.map((e: { path: string }) => e.path).sort()).toEqual([
      'payload.fail_times',
      'payload.sleep_ms',
    ]);
  });

  it('accepts none of a bulk with one bad job, and names it', async () => {
    const before = await countJobs();
    const r = await apiA('POST', '/v1/jobs/bulk', {
      jobs: [
        { type: 'test', payload: {} },
        { type: 'test', payload: { sleep_ms: 'x' } },
      ],
    });
    expect(r.status).toBe(400);
    expect(r.body.errors[0].path).toBe('jobs.1.payload.sleep_ms');
    expect(await countJobs()).toBe(before);
  });

  it('refuses more than 1000 jobs in a bulk and bodies over 1 MiB', async () => {
    const many = await apiA('POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 1001 }, () => ({ type: 'test', payload: {} })),
    });
    expect(many.status).toBe(400);
    const huge = await apiA('POST', '/v1/jobs', { type: 'test', payload: { value: 'x'.repeat(1024 * 1024) } });
    expect(huge.status).toBe(413);
    isProblem(huge, 413);
  });

  it('answers 409 for cancel or retry in the wrong state', async () => {
    const r = await apiA('POST', '/v1/jobs', { type: 'test', payload: {} });
    expect((await apiA('POST', `/v1/jobs/${r.body.id}/retry`)).status).toBe(409);
    expect((await apiA('POST', `/v1/jobs/${r.body.id}/cancel`)).status).toBe(200);
    const twice = await apiA('POST', `/v1/jobs/${r.body.id}/cancel`);
    expect(twice.status).toBe(409);
    isProblem(twice, 409);
  });

  it('refuses a type whose processor is not built with 422, saying so', async () => {
    const registry = createRegistry().register(
      defineJob({
        type: 'draft',
        description: 'not built',
        payload: z.object({}),
        attempts: 1,
        backoffMs: 1,
        concurrency: 1,
      }),
    );
    const app = createApp({ ...env, registry, log: silentLog });
    const r = await client(app, a.clientKey)('POST', '/v1/jobs', { type: 'draft', payload: {} });
    expect(r.status).toBe(422);
    isProblem(r, 422);
    expect(r.body.errors[0].message).toMatch(/not available/);
  });
});

describe('listing', () => {
  it('pages newest first with a cursor, filtered by type and state', async () => {
    const t = await tenantWithKeys(env);
    const api = client(env.app, t.clientKey);
    const made = (
      await api('POST', '/v1/jobs/bulk', {
        jobs: Array.from({ length: 5 }, (_, i) => ({ type: 'test', payload: { value: i } })),
      })
    ).body.jobs;
    await api('POST', '/v1/jobs', { type: 'serial', payload: {} });
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r: { body: { items: { id: string }[]; next_cursor: string | null } } = await api(
        'GET',
        `/v1/jobs?type=test&state=queued&limit=2${cursor ? `&cursor=${cursor}` : ''}`,
      );
      seen.push(...r.body.items.map((j) => j.id));
      cursor = r.body.next_cursor;
    } while (cursor);
    expect(seen).toEqual(made.map((j: { id: string }) => j.id).reverse());
  });
});

describe('dependencies down', () => {
  it('answers 503 quickly when Redis is unreachable, and writes nothing', async () => {
    const port = await getPort();
    const config = loadConfig({ ...env.env, REDIS_URL: `redis://127.0.0.1:${port}` });
    const redis = createRedis(config, 'producer');
    redis.on('error', () => {});
    const app = createApp({ ...env, config, redis, queues: new Queues(config, redis), log: silentLog });
    const before = await countJobs();
    const t0 = Date.now();
    const r = await client(app, a.clientKey)('POST', '/v1/jobs', { type: 'test', payload: {} });
    expect(r.status).toBe(503);
    isProblem(r, 503);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await countJobs()).toBe(before);
    expect((await app.request('/readyz')).status).toBe(503);
    redis.disconnect();
  });

  it('answers 503 quickly when PostgreSQL is unreachable', async () => {
    const port = await getPort();
    const db = createDb(`postgres://postgres@127.0.0.1:${port}/none`, 1);
    const app = createApp({ ...env, db, log: silentLog });
    const t0 = Date.now();
    const r = await client(app, a.clientKey)('GET', '/v1/jobs');
    expect(r.status).toBe(503);
    isProblem(r, 503);
    expect(Date.now() - t0).toBeLessThan(3000);
    await db.destroy();
  });
});

describe('a client that hangs up mid-body', () => {
  it('is not taken for PostgreSQL being down: no 503 warning, and the server goes on', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) });
    const app = createApp({
      config: env.config,
      db: env.db,
      redis: env.redis,
      queues: env.queues,
      registry: env.registry,
      storage: env.storage,
      log,
    });
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as { port: number };
    try {
      const socket = connect(port, '127.0.0.1');
      await new Promise((r) => socket.once('connect', r));
      socket.write(
        `POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.clientKey}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n{"type":"te\r\n`,
      );
      await new Promise((r) => setTimeout(r, 100));
      socket.destroy();
      await new Promise((r) => setTimeout(r, 200));
      expect(lines.join('')).not.toMatch(/PostgreSQL unavailable|unhandled error/);
      const after = await fetch(`http://127.0.0.1:${port}/v1/jobs`, {
        headers: { authorization: `Bearer ${a.clientKey}` },
      });
      expect(after.status).toBe(200);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
