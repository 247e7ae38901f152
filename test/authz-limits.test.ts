// Abuse limits and key hygiene: per-key rate limit (429, Retry-After, RateLimit-*), per-tenant caps on jobs in flight
// and image megapixels (operators exempt), prompt revocation, and no key or secret in logs, answers or metrics.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/api/app.js';
import { forgetKey } from '../src/api/auth.js';
import { announceRevocation, listenForRevocations } from '../src/auth/revocation.js';
import { createKey, revokeKey } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { saveFile } from '../src/files/index.js';
import { createTestEnv, ROOT, silentLog, startProcess, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let t: Awaited<ReturnType<typeof tenantWithKeys>>;

beforeAll(async () => {
  env = await createTestEnv('authz_limits');
  t = await tenantWithKeys(env);
});
afterAll(() => env?.close());

/** An app on the same database and Redis with some settings changed. */
function appWith(overrides: Record<string, string>) {
  const config = loadConfig({ ...env.env, ...overrides });
  return createApp({
    config,
    db: env.db,
    redis: env.redis,
    queues: env.queues,
    registry: env.registry,
    storage: env.storage,
    log: silentLog,
  } as Parameters<typeof createApp>[0]);
}

async function call(app: ReturnType<typeof createApp>, key: string, method: string, path: string, body?: unknown) {
  const res = await app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined, text };
}

describe('rate limit per API key', () => {
  it('answers 429 with Retry-After and RateLimit-* once a key spends its allowance; other keys are unaffected', async () => {
    // A prefix of its own, so the counters start at zero.
    const app = appWith({ RATE_LIMIT_PER_MINUTE: '5', QUEUE_PREFIX: `${env.config.QUEUE_PREFIX}_rl` });
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await call(app, t.clientKey, 'GET', '/v1/jobs');
      expect(r.status).toBe(200);
      expect(r.headers.get('ratelimit-limit')).toBe('5');
      expect(r.headers.get('ratelimit-policy')).toBe('5;w=60');
      remaining.push(r.headers.get('ratelimit-remaining')!);
    }
    expect(remaining).toEqual(['4', '3', '2', '1', '0']);
    const limited = await call(app, t.clientKey, 'GET', '/v1/jobs');
    expect(limited.status).toBe(429);
    expect(limited.headers.get('content-type')).toContain('application/problem+json');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    expect(limited.headers.get('ratelimit-remaining')).toBe('0');
    expect(limited.body).toMatchObject({ status: 429, title: 'Too Many Requests' });
    // The counter is kept by key id, never by the key itself.
    const keysInRedis = await env.redis.keys(`${env.config.QUEUE_PREFIX}_rl:rl:*`);
    expect(keysInRedis.some((k) => k.includes(t.clientKey))).toBe(false);
    expect((await call(app, t.operatorKey, 'GET', '/v1/jobs')).status).toBe(200);
  });
});

describe('per-tenant quotas', () => {
  it('caps the jobs a tenant has in flight; operators are exempt', async () => {
    const b = await tenantWithKeys(env);
    const app = appWith({ TENANT_MAX_IN_FLIGHT: '3' });
    const jobs = (n: number) => ({ jobs: Array.from({ length: n }, () => ({ type: 'test', payload: {} })) });
    expect((await call(app, b.clientKey, 'POST', '/v1/jobs/bulk', jobs(2))).status).toBe(202);
    // 2 in flight: a bulk of 2 would make 4.
    const over = await call(app, b.clientKey, 'POST', '/v1/jobs/bulk', jobs(2));
    expect(over.status).toBe(429);
    expect(over.headers.get('retry-after')).toBeTruthy();
    expect(over.body.detail).toMatch(/limit is 3/);
    expect((await call(app, b.clientKey, 'POST', '/v1/jobs', { type: 'test', payload: {} })).status).toBe(202);
    expect((await call(app, b.clientKey, 'POST', '/v1/jobs', { type: 'test', payload: {} })).status).toBe(429);
    // Operators run backfills and recoveries.
    expect((await call(app, b.operatorKey, 'POST', '/v1/jobs', { type: 'test', payload: {} })).status).toBe(202);
    // Finished jobs free their slots.
    await env.db.updateTable('jobs').set({ state: 'succeeded' }).where('tenant', '=', b.tenant).execute();
    expect((await call(app, b.clientKey, 'POST', '/v1/jobs/bulk', jobs(3))).status).toBe(202);
    // Another tenant has its own count.
    expect((await call(app, t.clientKey, 'POST', '/v1/jobs', { type: 'test', payload: {} })).status).toBe(202);
  });

  it('limits image work per tenant per minute in source megapixels × variants, and refunds refused requests', async () => {
    const c = await tenantWithKeys(env);
    const image = env.registry.get('image')!;
    // The quota is enforced at the API; a stand-in processor lets the API accept the type if none is built yet.
    if (!image.process) env.registry.register({ ...image, process: async () => ({ variants: [] }) });
    const app = appWith({ TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '5', QUEUE_PREFIX: `${env.config.QUEUE_PREFIX}_mp` });
    const png = await sharp({ create: { width: 1000, height: 1000, channels: 3, background: { r: 10, g: 20, b: 30 } } })
      .png()
      .toBuffer();
    const file = await saveFile(env.db, env.storage, { tenant: c.tenant, body: png, contentType: 'image/png' });
    const job = (variants: number) => ({
      type: 'image',
      payload: {
        file_id: file.id,
        variants: Array.from({ length: variants }, (_, i) => ({ name: `v${i}`, width: 100 })),
      },
    });

    // 1 MP × 2 variants = 2 each: 2 + 2 fit in 5, a third does not.
    expect((await call(app, c.clientKey, 'POST', '/v1/jobs', job(2))).status).toBe(202);
    expect((await call(app, c.clientKey, 'POST', '/v1/jobs', job(2))).status).toBe(202);
    const over = await call(app, c.clientKey, 'POST', '/v1/jobs', job(2));
    expect(over.status).toBe(429);
    expect(over.headers.get('ratelimit-limit')).toBe('5');
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // 1 MP left: a request that fails validation is not charged (the budget comes back).
    expect((await call(app, c.clientKey, 'POST', '/v1/jobs', { ...job(1), priority: 'urgent' })).status).toBe(400);
    expect((await call(app, c.clientKey, 'POST', '/v1/jobs', job(1))).status).toBe(202);
    // More than a whole minute's budget in one request can never pass: 422, not a 429 to retry forever.
    expect((await call(app, c.clientKey, 'POST', '/v1/jobs', job(8))).status).toBe(422);
    // Operators are exempt.
    expect((await call(app, c.operatorKey, 'POST', '/v1/jobs', job(2))).status).toBe(202);
  });
});

describe('revocation', () => {
  it('takes effect at once in a process that has the key cached, through the Redis broadcast', async () => {
    const k = await createKey(env.db, env.config.API_KEY_SECRET, t.tenant, 'client');
    const listener = listenForRevocations(env.config, forgetKey);
    try {
      await waitFor(
        async () =>
          (
            (await env.redis.call('PUBSUB', 'NUMSUB', `${env.config.QUEUE_PREFIX}:key-revoked`)) as [string, number]
          )[1] > 0,
        { what: 'the subscription' },
      );
      expect((await call(env.app, k.key, 'GET', '/v1/jobs')).status).toBe(200); // now cached for 5 s
      await revokeKey(env.db, k.id);
      expect(await announceRevocation(env.redis, env.config, k.id)).toBe(true);
      const t0 = Date.now();
      await waitFor(async () => (await call(env.app, k.key, 'GET', '/v1/jobs')).status === 401, {
        timeout: 4_000,
        interval: 20,
        what: 'the revoked key to be refused',
      });
      expect(Date.now() - t0).toBeLessThan(1_000);
    } finally {
      listener.close();
    }
  });

  it('reaches a real web process when the CLI revokes a key', { timeout: 90_000 }, async () => {
    const web = await startProcess('web', env.env);
    try {
      const k = await createKey(env.db, env.config.API_KEY_SECRET, t.tenant, 'client');
      const get = () =>
        fetch(`${web.url}/v1/jobs`, { headers: { authorization: `Bearer ${k.key}` } }).then((r) => r.status);
      expect(await get()).toBe(200);
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', 'src/cli.ts', 'keys', 'revoke', k.id],
        { cwd: ROOT, env: { ...process.env, ...env.env } },
      );
      expect(JSON.parse(stdout)).toEqual({ id: k.id, revoked: true });
      // Well inside the 5 s cache lifetime.
      const t0 = Date.now();
      await waitFor(async () => (await get()) === 401, {
        timeout: 4_000,
        interval: 20,
        what: 'the web process to refuse the key',
      });
      expect(Date.now() - t0).toBeLessThan(2_000);
    } finally {
      await web.stop();
    }
  });
});

describe('no key or secret leaks', () => {
  it('keeps keys and API_KEY_SECRET out of logs, answers and metrics, even at trace level', {
    timeout: 90_000,
  }, async () => {
    const secret = 'a-very-secret-hmac-key-for-this-test';
    const config = { ...env.env, API_KEY_SECRET: secret };
    // Keys hashed with this process's secret.
    const dbKey = await createKey(env.db, secret, t.tenant, 'operator');
    const web = await startProcess('web', config, { LOG_LEVEL: 'trace' });
    try {
      const forged = `mj_${'A'.repeat(43)}`;
      const answers: string[] = [];
      for (const [auth, path] of [
        [`Bearer ${dbKey.key}`, '/v1/jobs'],
        [`Bearer ${dbKey.key}`, '/v1/jobs/not-a-job'],
        [`Bearer ${dbKey.key}`, '/metrics'],
        [`Basic ${Buffer.from(`op:${dbKey.key}`).toString('base64')}`, '/v1/queues'],
        [`Bearer ${forged}`, '/v1/jobs'],
        [`Bearer ${dbKey.key}x`, '/v1/jobs'],
      ] as const) {
        const r = await fetch(web.url + path, { headers: { authorization: auth } });
        answers.push(`${r.status} ${[...r.headers].join(' ')} ${await r.text()}`);
      }
      const post = await fetch(`${web.url}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${dbKey.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'test', payload: { value: 1 }, key: dbKey.key }),
      });
      answers.push(await post.text());
      await web.stop();
      const everything = [...answers, web.output()].join('\n');
      for (const s of [dbKey.key, dbKey.key.slice(3, 23), forged, secret]) expect(everything).not.toContain(s);
      expect(answers[2]).toMatch(/^200 /); // the metrics were read, and hold no key
    } finally {
      await web.stop();
    }
  });
});
