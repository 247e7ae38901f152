// Chaos on Redis, against real web and worker processes and a private redis-server (the shared one is never touched):
// Redis stopped and restarted under load (503s, then recovery by itself, nothing accepted lost), and the API killed
// between its ledger commit and its enqueue.
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, sleep, startProcess, tenantWithKeys, waitFor, type Proc, type TestEnv } from './helpers.js';
import { privateRedis, type PrivateRedis } from './support/private-redis.js';
import { clientIdempotencyKey } from '../src/db/jobs.js';

let redis: PrivateRedis;
let env: TestEnv;
let key: string;
const procs: Proc[] = [];
const markers = mkdtempSync(path.join(os.tmpdir(), 'chaos-redis-'));

beforeAll(async () => {
  redis = await privateRedis();
  env = await createTestEnv('chaos_redis', {
    env: { REDIS_URL: redis.url, WORKER_LOCK_MS: '2000', TENANT_MAX_IN_FLIGHT: '0' },
  });
  key = (await tenantWithKeys(env)).clientKey;
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.close();
  await redis?.stop();
});

/** A process; a start that times out on a loaded machine is tried again rather than failing the test. */
async function start(kind: 'web' | 'worker', extra: Record<string, string> = {}) {
  for (let tries = 1; ; tries++) {
    try {
      const p = await startProcess(kind, env.env, extra);
      procs.push(p);
      return p;
    } catch (err) {
      if (tries >= 3 || !/timed out/.test(String(err))) throw err;
    }
  }
}

async function http(
  base: string,
  method: string,
  pathname: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const t0 = performance.now();
  const res = await fetch(base + pathname, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get('content-type') ?? '',
    body: text ? JSON.parse(text) : undefined,
    ms: performance.now() - t0,
  };
}

const ledgerStates = async (ids: string[]) => {
  const rows = await env.db
    .selectFrom('jobs')
    .select(['state'])
    .select((e) => e.fn.countAll<number>().as('n'))
    .where('id', 'in', ids)
    .groupBy('state')
    .execute();
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
};

describe('Redis stopped and restarted under load', () => {
  it('answers 503 fast while it is down, recovers without a restart, and loses no accepted job', {
    timeout: 120_000,
  }, async () => {
    const web = await start('web');
    const worker = await start('worker');
    const dir = mkdtempSync(path.join(markers, 'load-'));
    const accepted: string[] = [];
    const unavailable: number[] = [];
    const unexpected: string[] = [];
    let phase: 'before' | 'down' | 'after' = 'before';
    const acceptedIn = { before: 0, down: 0, after: 0 };
    let loading = true;
    const loader = async () => {
      for (let _i = 0; loading; _i++) {
        try {
          const r = await http(web.url!, 'POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: 20, marker: dir } });
          if (r.status === 202) {
            accepted.push(r.body.id);
            acceptedIn[phase]++;
          } else if (r.status === 503 && r.type.includes('application/problem+json')) {
            unavailable.push(r.ms);
          } else unexpected.push(`${r.status} ${JSON.stringify(r.body)}`);
        } catch (err) {
          unexpected.push(String(err));
        }
        await sleep(20);
      }
    };
    const loaders = Array.from({ length: 4 }, loader);

    await sleep(2_000);
    await redis.stop(); // SIGKILL, no persistence: everything queued in Redis is gone
    phase = 'down';
    await sleep(1_000);
    // Reads come from the ledger and keep working; the rate limiter falls back to memory.
    const read = await http(web.url!, 'GET', `/v1/jobs/${accepted[0]}`);
    expect(read.status).toBe(200);
    await sleep(3_000);
    await redis.start();
    phase = 'after';
    await waitFor(async () => acceptedIn.after >= 20, {
      timeout: 30_000,
      what: 'the API to accept jobs again (no restart)',
    });
    loading = false;
    await Promise.all(loaders);

    expect(unexpected).toEqual([]);
    expect(acceptedIn.before).toBeGreaterThan(0);
    expect(unavailable.length).toBeGreaterThan(0);
    // Fail fast: the producer connection does not queue commands while Redis is away.
    expect(Math.max(...unavailable)).toBeLessThan(3_000);
    await waitFor(async () => (await ledgerStates(accepted)).succeeded === accepted.length, {
      timeout: 60_000,
      interval: 500,
      what: `all ${accepted.length} accepted jobs to succeed`,
    });
    expect(await ledgerStates(accepted)).toEqual({ succeeded: accepted.length });
    const p95 = [...unavailable].sort((a, b) => a - b)[Math.floor(unavailable.length * 0.95)];
    console.info(
      `chaos-redis: accepted ${accepted.length} (${acceptedIn.before} before, ${acceptedIn.down} while going down, ${acceptedIn.after} after); ${unavailable.length} × 503, p95 ${p95.toFixed(0)} ms, max ${Math.max(...unavailable).toFixed(0)} ms`,
    );
    await Promise.all([web.stop(), worker.stop()]);
  });
});

describe('the API killed between its commit and its enqueue', () => {
  it('leaves a committed job that the reconciler runs once, and a retried request gets that same job', {
    timeout: 90_000,
  }, async () => {
    // No rate limiter here: its Redis call would be the first to block under the pause below.
    const web = await start('web', { RATE_LIMIT_PER_MINUTE: '0' });
    const dir = mkdtempSync(path.join(markers, 'commit-'));
    const admin = new Redis(redis.url);
    try {
      // Writes (BullMQ's add is a script that writes) wait; the API's commit to PostgreSQL goes through.
      await admin.call('CLIENT', 'PAUSE', '20000', 'WRITE');
      const idem = `chaos-${Date.now()}`;
      const body = { type: 'test', payload: { sleep_ms: 10, marker: dir } };
      const pending = http(web.url!, 'POST', '/v1/jobs', body, { 'idempotency-key': idem }).catch(
        (err: unknown) => err,
      );
      const row = await waitFor(
        () =>
          env.db
            .selectFrom('jobs')
            .selectAll()
            .where('idempotency_key', '=', clientIdempotencyKey(idem))
            .executeTakeFirst(),
        { timeout: 10_000, what: 'the ledger commit' },
      );
      await web.stop('SIGKILL');
      expect(await pending).toBeInstanceOf(Error); // the client never got an answer
      // Reads are not paused: the job is in the ledger and not in Redis, and nobody is left to enqueue it.
      expect(await admin.exists(`${env.config.QUEUE_PREFIX}:test:${row.id}`)).toBe(0);
      await admin.call('CLIENT', 'UNPAUSE');

      // A worker's reconciler finds the committed job missing from Redis and enqueues it.
      await start('worker');
      await waitFor(async () => (await ledgerStates([row.id])).succeeded === 1, {
        timeout: 30_000,
        what: 'the orphaned job to run',
      });
      // The client retries the request it never got an answer to: the same job, not a second one.
      const web2 = await start('web');
      const again = await http(web2.url!, 'POST', '/v1/jobs', body, { 'idempotency-key': idem });
      expect(again.status).toBe(200);
      expect(again.body.id).toBe(row.id);
      expect(
        readFileSync(path.join(dir, `${row.id}.done`), 'utf8')
          .trim()
          .split('\n'),
      ).toHaveLength(1);
      const count = await env.db
        .selectFrom('jobs')
        .select((e) => e.fn.countAll<number>().as('n'))
        .where('idempotency_key', '=', clientIdempotencyKey(idem))
        .executeTakeFirstOrThrow();
      expect(Number(count.n)).toBe(1);
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined);
      admin.disconnect();
    }
  });
});
