// Issue 17, items 10, 11 and 12: what unknown keys, open streams and the worker's metrics port cost or expose.
// Real PostgreSQL and Redis; the worker is a real process.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { Hono } from 'hono';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authenticate, type AuthEnv } from '../src/api/auth.js';
import { ProblemError } from '../src/api/errors.js';
import { createKey } from '../src/auth/keys.js';
import type { Database } from '../src/db/types.js';
import { client, createTestEnv, startProcess, tenantWithKeys, waitFor, type Proc, type TestEnv } from './helpers.js';

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;
let worker: Proc | undefined;

beforeAll(async () => {
  env = await createTestEnv('review_limits', { env: { SSE_MAX_STREAMS_PER_KEY: '2', TENANT_MAX_IN_FLIGHT: '0' } });
  keys = await tenantWithKeys(env);
});

afterAll(async () => {
  await worker?.stop();
  await env?.close();
});

/** A well-formed key that no one was given. */
const unknownKey = () => `mj_${randomBytes(32).toString('base64url')}`;

/** An app with only the authentication middleware, over a database handle that counts its api_keys queries. */
function authApp(ttlMs: number) {
  let lookups = 0;
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: env.config.DATABASE_URL, max: 5 }) }),
    log: (e) => {
      if (e.level === 'query' && /api_keys/.test(e.query.sql)) lookups++;
    },
  });
  const app = new Hono<AuthEnv>();
  app.use('*', authenticate(db, env.config.API_KEY_SECRET, ttlMs));
  app.get('/', (c) => c.text(c.get('principal').tenant));
  app.onError((err, c) => c.text(err.message, err instanceof ProblemError ? err.status : 500));
  const get = async (key: string) => (await app.request('/', { headers: { authorization: `Bearer ${key}` } })).status;
  return { get, lookups: () => lookups, close: () => db.destroy() };
}

describe('unknown API keys: a query each, and cache.clear() past 10,000 entries (item 10)', () => {
  it('a flood of unknown keys does not evict a valid key from the cache', { timeout: 180_000 }, async () => {
    const auth = authApp(600_000);
    try {
      const valid = await createKey(env.db, env.config.API_KEY_SECRET, keys.tenant, 'client');
      expect(await auth.get(valid.key)).toBe(200);
      // From here the key can only be answered from the cache: its row is gone (no revocation message either).
      await env.db.deleteFrom('api_keys').where('id', '=', valid.id).execute();
      const flood = Array.from({ length: 10_050 }, unknownKey);
      for (let i = 0; i < flood.length; i += 50) {
        const statuses = await Promise.all(flood.slice(i, i + 50).map(auth.get));
        expect(statuses.every((s) => s === 401)).toBe(true);
      }
      expect(await auth.get(valid.key)).toBe(200);
    } finally {
      await auth.close();
    }
  });

  it('an unknown key costs one query however often it is tried, and a malformed one none', async () => {
    const auth = authApp(600_000);
    try {
      const stranger = unknownKey();
      const first = await Promise.all(Array.from({ length: 20 }, () => auth.get(stranger)));
      const later = await Promise.all(Array.from({ length: 20 }, () => auth.get(stranger)));
      expect([...first, ...later].every((s) => s === 401)).toBe(true);
      expect(auth.lookups()).toBe(1);
      const malformed = await Promise.all(Array.from({ length: 100 }, (_, i) => auth.get(`guess-${i}`)));
      expect(malformed.every((s) => s === 401)).toBe(true);
      expect(auth.lookups()).toBe(1);
    } finally {
      await auth.close();
    }
  });
});

describe('no cap on open SSE streams per key (item 11)', () => {
  it('past SSE_MAX_STREAMS_PER_KEY a key gets 429 problem+json; another key is unaffected; a closed stream frees its place', async () => {
    const api = client(env.app, keys.clientKey);
    // A job that stays delayed: its stream stays open.
    const job = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    expect(job.status).toBe(202);
    // A stream's first bytes read, and a way to hang up.
    const open = async (key: string) => {
      const res = await env.app.request(`/v1/jobs/${job.body.id}/events`, {
        headers: { authorization: `Bearer ${key}` },
      });
      const reader = res.status === 200 ? res.body!.getReader() : undefined;
      await reader?.read();
      return { status: res.status, headers: res.headers, res, close: () => reader?.cancel() };
    };
    const first = await open(keys.clientKey);
    const second = await open(keys.clientKey);
    expect([first.status, second.status]).toEqual([200, 200]);
    const third = await open(keys.clientKey);
    expect(third.status).toBe(429);
    expect(third.headers.get('content-type')).toContain('application/problem+json');
    expect(third.headers.get('retry-after')).toBeTruthy();
    expect(((await third.res.json()) as { status: number }).status).toBe(429);

    const other = await open(keys.operatorKey);
    expect(other.status).toBe(200);
    await other.close();

    await first.close();
    const again = await waitFor(
      async () => {
        const res = await open(keys.clientKey);
        if (res.status === 200) return res;
        await res.close();
        return undefined;
      },
      { what: 'the closed stream to free its place' },
    );
    await again.close();
    await second.close();
  });
});

describe('worker /metrics binds all interfaces by default (item 12)', () => {
  it('a worker’s /metrics answers on loopback only unless WORKER_METRICS_HOST says otherwise', async () => {
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    expect(external, 'a non-loopback IPv4 address on this machine').toBeDefined();
    worker = await startProcess('worker', env.env, { QUEUES: 'test' });
    const port = await waitFor(() => /worker metrics on :(\d+)/.exec(worker!.output())?.[1], {
      what: 'the metrics port in the log',
    });
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    const outside = await fetch(`http://${external}:${port}/metrics`).then(
      (r) => r.status,
      (err: Error & { cause?: { code?: string } }) => err.cause?.code ?? err.message,
    );
    expect(outside).toBe('ECONNREFUSED');
  });
});
