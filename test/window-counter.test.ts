// The per-key request counter: exact within a process, shared through Redis between processes, local while Redis is down.
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { WindowCounter } from '../src/api/window-counter.js';
import { uniqueName, waitFor } from './helpers.js';

const redis = new Redis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
const prefix = `t_${uniqueName('window')}`;
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
});
