// The console's read models (src/db/console.ts) over a real ledger: rows with known times in, exact figures out.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTenant } from '../src/auth/keys.js';
import { backlog, perMinute, scheduleRuns, tenantLoads, typeStats } from '../src/db/console.js';
import { newId } from '../src/ids.js';
import { createTestEnv, type TestEnv } from './helpers.js';

let env: TestEnv;
let now: Date;

const ago = (s: number) => new Date(now.getTime() - s * 1000);

/** A finished job: ready `wait` s before it started, ran `run` s, finished `endedAgo` s ago. */
function finished(
  tenant: string,
  type: string,
  state: 'succeeded' | 'failed',
  endedAgo: number,
  wait: number,
  run: number,
) {
  const end = ago(endedAgo);
  const start = new Date(end.getTime() - run * 1000);
  return {
    id: newId(),
    tenant,
    type,
    state,
    priority: 'normal' as const,
    payload: '{}',
    max_attempts: 3,
    created_at: new Date(start.getTime() - wait * 1000),
    updated_at: end,
    started_at: start,
    finished_at: end,
  };
}

beforeAll(async () => {
  env = await createTestEnv('console_queries');
  await createTenant(env.db, 'acme');
  await createTenant(env.db, 'globex');
  const { t } = await env.db.selectNoFrom(sql<Date>`now()`.as('t')).executeTakeFirstOrThrow();
  now = t;
  await env.db
    .insertInto('jobs')
    .values([
      // email, last hour: 3 succeeded (waits 1, 2, 3 s; runs 10, 20, 30 s), 1 failed; in three different minutes.
      finished('acme', 'email', 'succeeded', 5, 1, 10),
      finished('acme', 'email', 'succeeded', 125, 2, 20),
      finished('acme', 'email', 'failed', 125, 3, 30),
      finished('globex', 'email', 'succeeded', 245, 4, 40),
      // Two hours ago: in the day, not the hour.
      finished('acme', 'email', 'failed', 7200, 5, 50),
      // Two days ago: in neither.
      finished('acme', 'image', 'succeeded', 172_800, 1, 1),
      { ...finished('acme', 'image', 'succeeded', 0, 0, 0), state: 'queued', started_at: null, finished_at: null },
      { ...finished('globex', 'image', 'succeeded', 0, 0, 0), state: 'running', finished_at: null },
      {
        ...finished('acme', 'report', 'succeeded', 3000, 90, 1),
        idempotency_key: `schedule:repeat:daily:${ago(3091).getTime()}`,
      },
      {
        ...finished('acme', 'report', 'failed', 600, 0, 1),
        idempotency_key: `schedule:repeat:daily:${ago(601 + 0).getTime()}`,
      },
      { ...finished('acme', 'report', 'succeeded', 60, 0, 1), idempotency_key: 'schedule:repeat:dailyx:1' },
    ])
    .execute();
});

afterAll(() => env?.close());

describe('console queries', () => {
  test('typeStats: counts and latency percentiles of the jobs that finished in the window, per type', async () => {
    const hour = await typeStats(env.db, 60);
    const email = hour.find((s) => s.type === 'email')!;
    expect(email).toMatchObject({ succeeded: 3, failed: 1 });
    // percentile_cont over waits 1,2,3,4 and runs 10,20,30,40.
    expect(email.wait_p50).toBeCloseTo(2.5, 6);
    expect(email.wait_p95).toBeCloseTo(3.85, 6);
    expect(email.run_p95).toBeCloseTo(38.5, 6);
    expect(hour.map((s) => s.type)).toEqual(['email', 'report']);
    const day = await typeStats(env.db, 1440);
    expect(day.find((s) => s.type === 'email')).toMatchObject({ succeeded: 3, failed: 2 });
    expect(day.some((s) => s.type === 'image')).toBe(false);
    expect((await typeStats(env.db, 60, 'globex')).map((s) => [s.type, s.succeeded, s.failed])).toEqual([
      ['email', 1, 0],
    ]);
  });

  test('perMinute: succeeded and failed per minute before now', async () => {
    const dbMinute = async () =>
      (await env.db.selectNoFrom(sql<Date>`date_trunc('minute', now())`.as('m')).executeTakeFirstOrThrow()).m.getTime();
    // Minutes are counted back from the database's current minute: read it on both sides of the query, and ask again
    // if a minute ended in between.
    for (;;) {
      const before = await dbMinute();
      const points = (await perMinute(env.db, 60)).filter((p) => p.type === 'email');
      if ((await dbMinute()) !== before) continue;
      const minuteOf = (s: number) => (before - Math.floor(ago(s).getTime() / 60_000) * 60_000) / 60_000;
      expect(points).toEqual([
        { type: 'email', ago: minuteOf(5), succeeded: 1, failed: 0 },
        { type: 'email', ago: minuteOf(125), succeeded: 1, failed: 1 },
        { type: 'email', ago: minuteOf(245), succeeded: 1, failed: 0 },
      ]);
      return;
    }
  });

  test('backlog and tenant loads: live jobs now, failures in 24 h', async () => {
    expect(await backlog(env.db)).toEqual([{ type: 'image', waiting: 1, running: 1 }]);
    expect(await backlog(env.db, 'globex')).toEqual([{ type: 'image', waiting: 0, running: 1 }]);
    expect(await tenantLoads(env.db)).toEqual([
      { tenant: 'acme', live: 1, failed_24h: 3 },
      { tenant: 'globex', live: 1, failed_24h: 0 },
    ]);
  });

  test("scheduleRuns: a schedule's jobs by its tick keys, newest first, with when each was due", async () => {
    const runs = await scheduleRuns(env.db, 'acme', 'daily', 5);
    expect(runs.map((r) => [r.state, r.due.getTime()])).toEqual([
      ['failed', ago(601).getTime()],
      ['succeeded', ago(3091).getTime()],
    ]);
    expect((runs[1].started_at!.getTime() - runs[1].due.getTime()) / 1000).toBe(90);
    expect(await scheduleRuns(env.db, 'globex', 'daily', 5)).toEqual([]);
  });
});
