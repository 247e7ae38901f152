// The per-tenant in-flight figure behind TENANT_MAX_IN_FLIGHT (src/api/rate-limit.ts InFlightCounts).
import { describe, expect, it, vi } from 'vitest';
import { InFlightCounts } from '../src/api/rate-limit.js';

function counter(initial: Record<string, number>) {
  const live = { ...initial };
  const queries: string[] = [];
  const count = async (tenant: string) => {
    queries.push(tenant);
    await new Promise((r) => setImmediate(r));
    return live[tenant] ?? 0;
  };
  return { live, queries, count };
}

const cap = 10;
const fits = (ask: number) => (n: number) => n + ask <= cap;

describe('InFlightCounts', () => {
  it('counts a tenant once while requests fit, adding what was accepted since', async () => {
    const db = counter({ a: 2 });
    const counts = new InFlightCounts(db.count, 60_000);
    expect(await counts.live('a', fits(1))).toBe(2);
    counts.accepted('a', 1);
    expect(await counts.live('a', fits(1))).toBe(3);
    counts.accepted('a', 5);
    expect(await counts.live('a', fits(1))).toBe(8);
    expect(db.queries).toEqual(['a']);
  });

  it('ignores what is accepted for a tenant it has not counted: the first count includes it', async () => {
    const db = counter({ a: 2 });
    const counts = new InFlightCounts(db.count, 60_000);
    counts.accepted('a', 5);
    expect(await counts.live('a', fits(1))).toBe(2);
    expect(db.queries).toEqual(['a']);
  });

  it('decides a refusal on a fresh count: finished jobs free their slots at once', async () => {
    const db = counter({ a: 9 });
    const counts = new InFlightCounts(db.count, 60_000);
    expect(await counts.live('a', fits(1))).toBe(9);
    db.live.a = 1; // jobs finished
    expect(await counts.live('a', fits(2))).toBe(1);
    expect(db.queries).toEqual(['a', 'a']);
  });

  it('shares one query among requests waiting for the same tenant, and keeps tenants apart', async () => {
    const db = counter({ a: 4, b: 7 });
    const counts = new InFlightCounts(db.count, 60_000);
    expect(
      await Promise.all([counts.live('a', fits(1)), counts.live('a', fits(1)), counts.live('b', fits(1))]),
    ).toEqual([4, 4, 7]);
    expect(db.queries).toEqual(['a', 'b']);
  });

  it('recounts a figure older than the TTL behind the request that finds it, without making it wait', async () => {
    // The clock alone is faked: the figure's age is what is tested, and a loaded machine must not add to it.
    vi.useFakeTimers({ toFake: ['Date'], now: 1_000_000 });
    try {
      const db = counter({ a: 3 });
      const counts = new InFlightCounts(db.count, 20);
      await counts.live('a', fits(1));
      db.live.a = 5;
      vi.setSystemTime(1_000_019);
      expect(await counts.live('a', fits(1))).toBe(3);
      expect(db.queries).toEqual(['a']);
      vi.setSystemTime(1_000_020);
      expect(await counts.live('a', fits(1))).toBe(3);
      // The recount behind it (one query, queued before this wait) lands, and is fresh until its own TTL ends.
      await new Promise((r) => setImmediate(r));
      expect(await counts.live('a', fits(1))).toBe(5);
      expect(db.queries).toEqual(['a', 'a']);
    } finally {
      vi.useRealTimers();
    }
  });
});
