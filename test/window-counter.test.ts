// The per-key request counter: exact within a process, shared through Redis between processes, local while Redis is down.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { WindowCounter } from '../src/api/window-counter.js';

const redis = new Redis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
const prefix = `t_window_${randomBytes(4).toString('hex')}`;
// Not ./helpers.js: it loads the whole app, most of this file's time under mutation testing (npm run test:mutation).
async function waitFor(fn: () => Promise<boolean>) {
  for (let i = 0; i < 400; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('timed out waiting for Redis');
}
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

describe('WindowCounter', () => {
  it('allows `limit` requests per key per window, counts down, and starts again in the next window', () => {
    const c = new WindowCounter(redis, `${prefix}:a`, 3, 60_000);
    const t0 = 120_000 + 5_000;
    expect([1, 2, 3, 4].map(() => c.take('k', t0))).toEqual([
      { ok: true, remaining: 2, resetMs: 55_000 },
      { ok: true, remaining: 1, resetMs: 55_000 },
      { ok: true, remaining: 0, resetMs: 55_000 },
      { ok: false, remaining: 0, resetMs: 55_000 },
    ]);
    expect(c.take('other', t0).ok).toBe(true);
    expect(c.take('k', 180_000)).toEqual({ ok: true, remaining: 2, resetMs: 60_000 });
  });

  it('shares the count between processes through Redis, one INCRBY per key per sync', async () => {
    // Not across a minute boundary: the whole test runs in one window.
    if (Date.now() % 60_000 > 55_000) await new Promise((r) => setTimeout(r, 60_000 - (Date.now() % 60_000) + 10));
    const a = new WindowCounter(redis, `${prefix}:b`, 10, 60_000);
    const b = new WindowCounter(redis, `${prefix}:b`, 10, 60_000);
    for (let i = 0; i < 6; i++) expect(a.take('k').ok).toBe(true);
    const window = Math.floor(Date.now() / 60_000);
    await waitFor(async () => (await redis.get(`${prefix}:b:${window}:k`)) === '6');
    expect(Number(await redis.pttl(`${prefix}:b:${window}:k`))).toBeGreaterThan(60_000);
    // b meets the key for the first time: it answers from its own count, then learns a's at its sync.
    expect(b.take('k')).toMatchObject({ ok: true, remaining: 9 });
    await waitFor(async () => (await redis.get(`${prefix}:b:${window}:k`)) === '7');
    await new Promise((r) => setTimeout(r, 20));
    expect(b.take('k')).toMatchObject({ ok: true, remaining: 2 });
    expect(b.take('k')).toMatchObject({ ok: true, remaining: 1 });
    expect(b.take('k')).toMatchObject({ ok: true, remaining: 0 });
    expect(b.take('k').ok).toBe(false);
  });

  it('keeps counting in memory while Redis is unreachable', async () => {
    const down = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null });
    const c = new WindowCounter(down, `${prefix}:c`, 2, 60_000);
    expect(c.take('k').ok).toBe(true);
    await new Promise((r) => setTimeout(r, 30));
    expect(c.take('k').ok).toBe(true);
    expect(c.take('k').ok).toBe(false);
    down.disconnect();
  });

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const windowKey = (name: string, key: string) => `${prefix}:${name}:${Math.floor(Date.now() / 60_000)}:${key}`;
  /** Not across a minute boundary: the test that calls this runs in one window. */
  const sameMinute = async () => {
    if (Date.now() % 60_000 > 55_000) await sleep(60_000 - (Date.now() % 60_000) + 10);
  };

  it('keeps syncing after its first flush: every later count reaches Redis too', async () => {
    await sameMinute();
    const c = new WindowCounter(redis, `${prefix}:d`, 100, 60_000);
    c.take('k');
    c.take('k');
    await waitFor(async () => (await redis.get(windowKey('d', 'k'))) === '2');
    for (let i = 0; i < 3; i++) c.take('k');
    await waitFor(async () => (await redis.get(windowKey('d', 'k'))) === '5');
    c.take('k');
    await waitFor(async () => (await redis.get(windowKey('d', 'k'))) === '6');
  });

  it('counts the requests still on their way to Redis against the limit', async () => {
    await sameMinute();
    // A connection held by a blocking BLPOP: the counter's INCRBY waits behind it, as behind a slow Redis.
    const held = new Redis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
    await held.ping(); // connected, so the counter's first flush sends at once
    const gate = `${prefix}:gate`;
    const blocked = held.blpop(gate, 0);
    const c = new WindowCounter(held, `${prefix}:e`, 3, 60_000);
    expect(c.take('k')).toMatchObject({ ok: true, remaining: 2 });
    expect(c.take('k')).toMatchObject({ ok: true, remaining: 1 });
    await sleep(20); // the flush (due at once) has sent both; no reply yet
    expect(await redis.get(windowKey('e', 'k'))).toBeNull();
    expect(c.take('k')).toMatchObject({ ok: true, remaining: 0 });
    expect(c.take('k')).toMatchObject({ ok: false, remaining: 0 });
    await redis.lpush(gate, 'go');
    await blocked;
    // The request counted during that flush goes out after it, with no further request to prompt it.
    await waitFor(async () => (await redis.get(windowKey('e', 'k'))) === '3');
    expect(c.take('k').ok).toBe(false);
    held.disconnect();
  });

  it('keeps a count Redis refused as its own, and goes on counting', async () => {
    await sameMinute();
    // INCRBY on a value that is not an integer fails: the flush's error path, on a real Redis.
    await redis.set(windowKey('f', 'k'), 'not a number', 'PX', 60_000);
    const c = new WindowCounter(redis, `${prefix}:f`, 3, 60_000);
    expect(c.take('k').ok).toBe(true);
    expect(c.take('k').ok).toBe(true);
    await sleep(50);
    expect(c.take('k')).toMatchObject({ ok: true, remaining: 0 });
    expect(c.take('k').ok).toBe(false);
    expect(await redis.get(windowKey('f', 'k'))).toBe('not a number');
  });

  it('keeps counting a count Redis lost, when Redis answers again with less', async () => {
    await sameMinute();
    await redis.set(windowKey('i', 'k'), 'not a number', 'PX', 60_000);
    const c = new WindowCounter(redis, `${prefix}:i`, 4, 60_000);
    c.take('k');
    c.take('k');
    await sleep(50);
    // Redis lost the key (a restart, an eviction): its next answer (1) is less than this process has seen (3).
    await redis.del(windowKey('i', 'k'));
    c.take('k');
    await waitFor(async () => (await redis.get(windowKey('i', 'k'))) === '1');
    await sleep(20);
    expect(c.take('k')).toMatchObject({ ok: true, remaining: 0 });
    expect(c.take('k').ok).toBe(false);
  });

  it("keeps a current window after sending its count, so the limit still holds when other keys' counts go out", async () => {
    await sameMinute();
    const c = new WindowCounter(redis, `${prefix}:j`, 2, 60_000);
    c.take('k');
    c.take('k');
    await waitFor(async () => (await redis.get(windowKey('j', 'k'))) === '2');
    c.take('other');
    await waitFor(async () => (await redis.get(windowKey('j', 'other'))) === '1');
    c.take('other');
    await waitFor(async () => (await redis.get(windowKey('j', 'other'))) === '2');
    expect(c.take('k')).toMatchObject({ ok: false, remaining: 0 });
  });

  it('sends what it counted while Redis was unreachable once Redis is back', async () => {
    await sameMinute();
    const late = new Redis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379', { lazyConnect: true });
    const c = new WindowCounter(late, `${prefix}:g`, 10, 60_000);
    c.take('k');
    c.take('k');
    await sleep(20);
    expect(await redis.get(windowKey('g', 'k'))).toBeNull();
    await late.connect();
    c.take('k');
    await waitFor(async () => (await redis.get(windowKey('g', 'k'))) === '3');
    expect(c.take('k')).toMatchObject({ ok: true, remaining: 6 });
    late.disconnect();
  });

  it('forgets a key once its window has passed and its count is sent, so memory does not grow', async () => {
    await sameMinute();
    const c = new WindowCounter(redis, `${prefix}:h`, 10, 60_000);
    // biome-ignore lint/complexity/useLiteralKeys: the counter's memory is private; the behaviour here is that it shrinks
    const windows = c['windows'];
    c.take('old', Date.now() - 60_000);
    c.take('now');
    await waitFor(async () => (await redis.get(windowKey('h', 'now'))) === '1');
    expect([...windows.keys()].sort()).toEqual(['now', 'old']);
    // The next flush finds the old window done and drops it; the current one stays.
    c.take('now');
    await waitFor(async () => (await redis.get(windowKey('h', 'now'))) === '2');
    expect([...windows.keys()]).toEqual(['now']);
    expect(c.take('old')).toMatchObject({ ok: true, remaining: 9 });
  });
});
