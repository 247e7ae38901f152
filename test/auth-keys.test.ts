// Authentication and key handling, in process against a private PostgreSQL database and the shared Redis: reading a
// key from the header, tenants and keys (only an HMAC stored), revocation (in the database, in the lookup cache, and
// announced to every process), and the middleware's answers. Through the public functions of src/auth/ and
// src/api/auth.ts only; test/authz.test.ts checks every route's authorisation through the whole app.
import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AuthEnv, authenticate, forgetKey, keyFromHeader, requireOperator, tenantScope } from '../src/api/auth.js';
import { ProblemError } from '../src/api/errors.js';
import { createKey, createTenant, findPrincipal, hashKey, revokeKey } from '../src/auth/keys.js';
import {
  announceRevocation,
  announceRevocationOnce,
  listenForRevocations,
  revocationChannel,
} from '../src/auth/revocation.js';
import { loadConfig } from '../src/config.js';
import type { Db } from '../src/db/index.js';
import { type UnitDb, unitDb, unitDbName } from './support/unit-db.js';

const name = unitDbName('auth_keys');
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const secret = 'test-secret-of-at-least-16';
let unit: UnitDb;
let db: Db;

beforeAll(async () => {
  unit = await unitDb(name, ['ann', 'bob']);
  db = unit.db;
});

afterAll(async () => {
  await unit?.close();
});

const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;

describe('the key in the Authorization header', () => {
  it('reads a bearer key, in any case of the scheme', () => {
    expect(keyFromHeader('Bearer mj_abc')).toBe('mj_abc');
    expect(keyFromHeader('bearer mj_abc')).toBe('mj_abc');
    expect(keyFromHeader('BEARER mj_abc\t')).toBe('mj_abc');
  });

  it('reads HTTP Basic with the key as the password, so a browser can log in', () => {
    expect(keyFromHeader(basic('anyone:mj_abc'))).toBe('mj_abc');
    expect(keyFromHeader(basic(':mj_abc'))).toBe('mj_abc');
    expect(keyFromHeader(basic('a:b:c'))).toBe('b:c');
    expect(keyFromHeader(`basic ${Buffer.from('u:k').toString('base64')}`)).toBe('k');
    expect(keyFromHeader(basic('no-colon'))).toBeUndefined();
  });

  it('finds no key in anything else', () => {
    for (const h of [undefined, '', 'Bearer', 'Bearer ', 'mj_abc', 'Token mj_abc', 'Bearerx mj_abc', 'xBearer mj_abc'])
      expect(keyFromHeader(h), String(h)).toBeUndefined();
    expect(keyFromHeader('Basicx dTpr')).toBeUndefined();
    expect(keyFromHeader('xBasic dTpr')).toBeUndefined();
  });
});

describe('tenants and keys', () => {
  it('names tenants by a strict pattern, each with its own Standard Webhooks secret', async () => {
    for (const bad of ['', 'Ann', '-ann', '_ann', 'a b', 'ann!', 'x'.repeat(64)])
      await expect(createTenant(db, bad), bad).rejects.toThrow('tenant name must match');
    const long = await createTenant(db, `c${'x'.repeat(62)}`);
    const short = await createTenant(db, '9');
    expect(long.tenant).toHaveLength(63);
    expect(long.webhook_secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(short.webhook_secret).not.toBe(long.webhook_secret);
    expect(await createTenant(db, 'a-b_c').then((t) => t.tenant)).toBe('a-b_c');
  });

  it('shows a key once and stores only its HMAC under the secret', async () => {
    const k = await createKey(db, secret, 'ann', 'client');
    expect(k).toMatchObject({ tenant: 'ann', role: 'client' });
    expect(k.key).toMatch(/^mj_[A-Za-z0-9_-]{43}$/);
    expect(k.id).toMatch(/^key_[A-Za-z0-9_-]{12}$/);
    const row = await db.selectFrom('api_keys').selectAll().where('id', '=', k.id).executeTakeFirstOrThrow();
    expect(row.hash).toBe(hashKey(secret, k.key));
    expect(JSON.stringify(row)).not.toContain(k.key.slice(3));
    expect(hashKey(secret, k.key)).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(hashKey(`${secret}x`, k.key)).not.toBe(row.hash);
    expect(hashKey(secret, `${k.key}x`)).not.toBe(row.hash);
    const other = await createKey(db, secret, 'ann', 'client');
    expect(other.key).not.toBe(k.key);
    expect(other.id).not.toBe(k.id);
  });

  it('finds the principal of a key under the right secret only, and none once it is revoked', async () => {
    const k = await createKey(db, secret, 'bob', 'operator');
    expect(await findPrincipal(db, secret, k.key)).toEqual({ keyId: k.id, tenant: 'bob', role: 'operator' });
    expect(await findPrincipal(db, 'another-secret-of-16+', k.key)).toBeUndefined();
    expect(await findPrincipal(db, secret, `${k.key}x`)).toBeUndefined();
    expect(await revokeKey(db, k.id)).toBe(true);
    expect(await findPrincipal(db, secret, k.key)).toBeUndefined();
    // Revoking twice, or a key that does not exist, changes nothing and says so.
    expect(await revokeKey(db, k.id)).toBe(false);
    expect(await revokeKey(db, 'key_nosuchkey000')).toBe(false);
    const row = await db.selectFrom('api_keys').select('revoked_at').where('id', '=', k.id).executeTakeFirstOrThrow();
    expect(row.revoked_at).toBeInstanceOf(Date);
  });
});

describe('the authentication middleware', () => {
  function app(ttlMs?: number) {
    const a = new Hono<AuthEnv>();
    a.onError((err, c) =>
      err instanceof ProblemError
        ? c.json({ slug: err.slug, detail: err.message, auth: err.headers['WWW-Authenticate'] }, err.status)
        : c.json({ detail: String(err) }, 500),
    );
    a.use('*', authenticate(db, secret, ttlMs));
    a.get('/me', (c) => c.json({ ...c.get('principal'), scope: tenantScope(c.get('principal')) ?? null }));
    a.get('/ops', requireOperator(), (c) => c.json({ ok: true }));
    return async (path: string, key?: string) => {
      const r = await a.request(path, { headers: key === undefined ? {} : { authorization: key } });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
  }

  it('answers 401, with a challenge, when no key or a key it does not know comes', async () => {
    const call = app();
    const required = {
      slug: 'unauthorized',
      detail: 'A valid API key is required.',
      auth: 'Bearer realm="movie-jobs", Basic realm="movie-jobs"',
    };
    expect(await call('/me')).toEqual({ status: 401, body: required });
    // A header that carries no key in a scheme we read: the same challenge, and a hint how to send one.
    expect(await call('/me', 'Token x')).toEqual({
      status: 401,
      body: { ...required, detail: expect.stringContaining('Send the key as `Authorization: Bearer <key>`.') },
    });
    // Longer than any key: refused before a lookup.
    expect(await call('/me', `Bearer ${'k'.repeat(201)}`)).toEqual({ status: 401, body: required });
    expect(await call('/me', `Bearer ${'k'.repeat(200)}`)).toMatchObject({
      status: 401,
      body: { detail: 'The API key is unknown or revoked.' },
    });
    expect(await call('/me', 'Bearer mj_unknown')).toMatchObject({
      status: 401,
      body: { detail: 'The API key is unknown or revoked.' },
    });
  });

  it("sets the key's principal; a client is scoped to its tenant, an operator to all", async () => {
    const call = app();
    const client = await createKey(db, secret, 'ann', 'client');
    const op = await createKey(db, secret, 'bob', 'operator');
    expect(await call('/me', `Bearer ${client.key}`)).toEqual({
      status: 200,
      body: { keyId: client.id, tenant: 'ann', role: 'client', scope: 'ann' },
    });
    expect(await call('/me', basic(`x:${op.key}`))).toEqual({
      status: 200,
      body: { keyId: op.id, tenant: 'bob', role: 'operator', scope: null },
    });
    const long = await createKey(db, secret, 'ann', 'client');
    expect(long.key.length).toBeLessThan(200);
    expect((await call('/me', `Bearer ${long.key}`)).status).toBe(200);
  });

  it('lets only operators through requireOperator', async () => {
    const call = app();
    const client = await createKey(db, secret, 'ann', 'client');
    const op = await createKey(db, secret, 'ann', 'operator');
    expect(await call('/ops', `Bearer ${client.key}`)).toMatchObject({
      status: 403,
      body: { slug: 'forbidden', detail: 'This route is for operators.' },
    });
    expect(await call('/ops', `Bearer ${op.key}`)).toEqual({ status: 200, body: { ok: true } });
  });

  it('serves a revoked key from its cache until told (forgetKey) or until the entry lapses', async () => {
    const call = app(60_000);
    const k = await createKey(db, secret, 'ann', 'client');
    const other = await createKey(db, secret, 'ann', 'client');
    expect((await call('/me', `Bearer ${k.key}`)).status).toBe(200);
    expect((await call('/me', `Bearer ${other.key}`)).status).toBe(200);
    await revokeKey(db, k.id);
    expect((await call('/me', `Bearer ${k.key}`)).status).toBe(200);
    forgetKey(k.id);
    expect((await call('/me', `Bearer ${k.key}`)).status).toBe(401);
    // Only that key was forgotten.
    await revokeKey(db, other.id);
    expect((await call('/me', `Bearer ${other.key}`)).status).toBe(200);

    const lapsing = app(30);
    const l = await createKey(db, secret, 'ann', 'client');
    expect((await lapsing('/me', `Bearer ${l.key}`)).status).toBe(200);
    await revokeKey(db, l.id);
    await new Promise((r) => setTimeout(r, 60));
    expect((await lapsing('/me', `Bearer ${l.key}`)).status).toBe(401);
  });

  it('caches an unknown key as unknown too, until the entry lapses', async () => {
    const call = app(60_000);
    const key = `mj_${randomBytes(32).toString('base64url')}`;
    expect((await call('/me', `Bearer ${key}`)).status).toBe(401);
    // Forgetting a revoked key passes over the cached unknown ones.
    expect(() => forgetKey('key_revoked_elsewhere')).not.toThrow();
    await db
      .insertInto('api_keys')
      .values({ id: 'key_late', tenant: 'ann', role: 'client', hash: hashKey(secret, key) })
      .execute();
    expect((await call('/me', `Bearer ${key}`)).status).toBe(401);
    expect((await app(60_000)('/me', `Bearer ${key}`)).status).toBe(200);
  });
});

describe('revocation announced to every process', () => {
  const config = loadConfig({ REDIS_URL: redisUrl, QUEUE_PREFIX: `t_${name}` });

  it('reaches a listener on this prefix, and only on this prefix', async () => {
    const heard: string[] = [];
    const elsewhere: string[] = [];
    const other = loadConfig({ REDIS_URL: redisUrl, QUEUE_PREFIX: `t_${name}_other` });
    const a = listenForRevocations(config, (id) => heard.push(id));
    const b = listenForRevocations(other, (id) => elsewhere.push(id));
    const redis = new Redis(redisUrl);
    // Wait until both subscriptions are in place.
    for (let i = 0; i < 400; i++) {
      const counts = (await redis.pubsub('NUMSUB', revocationChannel(config), revocationChannel(other))) as unknown[];
      if (counts[1] === 1 && counts[3] === 1) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(revocationChannel(config)).toBe(`t_${name}:key-revoked`);
    expect(await announceRevocation(redis, config, 'key_one')).toBe(true);
    expect(await announceRevocationOnce(config, 'key_two')).toBe(true);
    await redis.publish(`t_${name}:something-else`, 'key_three');
    expect(await announceRevocation(redis, other, 'key_four')).toBe(true);
    for (let i = 0; i < 400 && (heard.length < 2 || elsewhere.length < 1); i++)
      await new Promise((r) => setTimeout(r, 5));
    expect(heard).toEqual(['key_one', 'key_two']);
    expect(elsewhere).toEqual(['key_four']);
    a.close();
    b.close();
    redis.disconnect();
  });

  it('says false, and throws nothing, when Redis does not take the message', async () => {
    const down = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null });
    expect(await announceRevocation(down, config, 'key_x')).toBe(false);
    down.disconnect();
    const nowhere = loadConfig({ REDIS_URL: 'redis://127.0.0.1:1', QUEUE_PREFIX: `t_${name}` });
    expect(await announceRevocationOnce(nowhere, 'key_x')).toBe(false);
  });
});
