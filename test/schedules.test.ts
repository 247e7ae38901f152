// Schedules: validation and CRUD in process; one job per tick with two real worker processes.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTenant } from '../src/auth/keys.js';
import { installDemoSchedules, SCHEDULES_QUEUE, syncSchedulers } from '../src/schedules/index.js';
import {
  client,
  createTestEnv,
  sleep,
  startProcess,
  tenantWithKeys,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;
let op: ReturnType<typeof client>;
const procs: Proc[] = [];

beforeAll(async () => {
  env = await createTestEnv('schedules');
  keys = await tenantWithKeys(env);
  op = client(env.app, keys.operatorKey);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await env?.close();
});

const scheduler = (name: string) => env.queues.get(SCHEDULES_QUEUE).getJobScheduler(name);

describe('validation', () => {
  test('a bad cron expression is a 400 naming it', async () => {
    const r = await op('PUT', '/v1/schedules/bad-cron', { type: 'test', payload: {}, cron: '61 * * * *' });
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toContain('application/problem+json');
    expect(r.body.detail).toContain("'61 * * * *'");
    expect(r.body.errors).toEqual([
      expect.objectContaining({
        path: 'cron',
        message: expect.stringContaining("'61 * * * *' is not a valid cron expression"),
      }),
    ]);
    expect((await op('PUT', '/v1/schedules/bad-cron', { type: 'test', payload: {}, cron: 'every day' })).status).toBe(
      400,
    );
    expect(await scheduler('bad-cron')).toBeUndefined();
  });

  test.each([
    ['both rules', { cron: '* * * * *', every_ms: 5000 }, 'cron'],
    ['no rule', {}, 'cron'],
    ['a bad time zone', { cron: '0 3 * * *', tz: 'Mars/Olympus' }, 'tz'],
    ['tz without cron', { every_ms: 5000, tz: 'UTC' }, 'tz'],
    ['too fast', { every_ms: 10 }, 'every_ms'],
    ['a bad payload', { every_ms: 5000, payload: { sleep_ms: 'x' } }, 'payload.sleep_ms'],
    ['an unknown type', { every_ms: 5000, type: 'nope' }, 'type'],
    ['an unknown field', { every_ms: 5000, when: 'now' }, ''],
    ['an unknown tenant', { every_ms: 5000, tenant: 'no-such-tenant' }, 'tenant'],
  ])('refuses %s with a 400', async (_, extra, path) => {
    const r = await op('PUT', '/v1/schedules/refused', { type: 'test', payload: {}, ...extra });
    expect(r.status).toBe(400);
    if (path) expect(r.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  });

  test('a bad name is a 400; a name that cannot exist is 404', async () => {
    expect((await op('PUT', '/v1/schedules/Bad%20Name', { type: 'test', payload: {}, every_ms: 5000 })).status).toBe(
      400,
    );
    expect((await op('GET', '/v1/schedules/Bad%20Name')).status).toBe(404);
    expect((await op('DELETE', '/v1/schedules/missing')).status).toBe(404);
  });

  test('is for operators', async () => {
    const cl = client(env.app, keys.clientKey);
    expect((await cl('GET', '/v1/schedules')).status).toBe(403);
    expect((await cl('PUT', '/v1/schedules/x', { type: 'test', payload: {}, every_ms: 5000 })).status).toBe(403);
    expect((await client(env.app)('GET', '/v1/schedules')).status).toBe(401);
  });
});

describe('CRUD', () => {
  test('PUT creates then replaces, GET lists with the next run, DELETE removes; all audited and mirrored in BullMQ', async () => {
    const spec = { type: 'test', payload: { value: 'nightly' }, cron: '0 3 * * *', tz: 'Europe/Paris' };
    const created = await op('PUT', '/v1/schedules/nightly', spec);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      name: 'nightly',
      tenant: keys.tenant,
      type: 'test',
      cron: '0 3 * * *',
      tz: 'Europe/Paris',
      every_ms: null,
      priority: 'normal',
    });
    const next = new Date(created.body.next_run_at);
    expect(next.getTime()).toBeGreaterThan(Date.now());
    // 03:00 in Paris is 01:00 or 02:00 UTC.
    expect([1, 2]).toContain(next.getUTCHours());
    expect(await scheduler('nightly')).toMatchObject({ pattern: '0 3 * * *', tz: 'Europe/Paris' });

    const replaced = await op('PUT', '/v1/schedules/nightly', {
      ...spec,
      cron: undefined,
      tz: undefined,
      every_ms: 3_600_000,
      priority: 'low',
    });
    expect(replaced.status).toBe(200);
    expect(replaced.body).toMatchObject({ cron: null, tz: null, every_ms: 3_600_000, priority: 'low' });
    expect(await scheduler('nightly')).toMatchObject({ every: 3_600_000 });

    const list = await op('GET', '/v1/schedules');
    expect(list.status).toBe(200);
    expect(list.body.items.map((s: { name: string }) => s.name)).toContain('nightly');
    expect((await op('GET', '/v1/schedules/nightly')).body.every_ms).toBe(3_600_000);

    expect((await op('DELETE', '/v1/schedules/nightly')).status).toBe(204);
    expect((await op('GET', '/v1/schedules/nightly')).status).toBe(404);
    expect(await scheduler('nightly')).toBeUndefined();

    const audit = await op('GET', '/v1/audit?target_kind=schedule&target=nightly');
    expect(audit.body.items.map((e: { action: string }) => e.action)).toEqual([
      'schedule.delete',
      'schedule.update',
      'schedule.create',
    ]);
  });
});

describe('ticks', () => {
  test('every_ms 1000 with two worker processes makes exactly one ordinary ledger job per tick', async () => {
    // One after the other: two cold starts at once on a busy 2-core machine can pass the start timeout.
    procs.push(await startProcess('worker', env.env));
    procs.push(await startProcess('worker', env.env));
    const t0 = Date.now();
    const put = await op('PUT', '/v1/schedules/every-second', {
      type: 'test',
      payload: { value: 'tick' },
      every_ms: 1000,
    });
    expect(put.status).toBe(201);
    await sleep(6_000);
    expect((await op('DELETE', '/v1/schedules/every-second')).status).toBe(204);
    const t1 = Date.now();
    await sleep(1_500);

    const jobs = await env.db
      .selectFrom('jobs')
      .select(['id', 'idempotency_key', 'state', 'tenant'])
      .where('idempotency_key', 'like', 'schedule:repeat:every-second:%')
      .execute();
    const ticks = jobs.map((j) => Number(j.idempotency_key!.split(':').pop()));
    const seen = `window ${t1 - t0} ms, ticks ${JSON.stringify([...ticks].sort().map((t) => t - t0))}`;
    // One job per tick: no tick twice, ticks a whole number of seconds apart, no more jobs than ticks in the window.
    expect(new Set(ticks).size, seen).toBe(jobs.length);
    const sorted = [...ticks].sort((a, b) => a - b);
    expect(
      sorted.slice(1).every((t, i) => (t - sorted[i]) % 1000 === 0),
      seen,
    ).toBe(true);
    expect(jobs.length, seen).toBeGreaterThanOrEqual(4);
    expect(jobs.length, seen).toBeLessThanOrEqual(Math.ceil((t1 - t0) / 1000) + 1);
    expect(jobs.every((j) => j.tenant === keys.tenant)).toBe(true);
    // Each run is a normal job: it runs to success like any other.
    await waitFor(
      async () => {
        const states = await env.db
          .selectFrom('jobs')
          .select('state')
          .where(
            'id',
            'in',
            jobs.map((j) => j.id),
          )
          .execute();
        return states.every((s) => s.state === 'succeeded');
      },
      { what: 'scheduled jobs to succeed' },
    );
    const submittedLines = procs.map(
      (p) =>
        p
          .output()
          .split('\n')
          .filter((l) => l.includes('scheduled run submitted')).length,
    );
    expect(
      submittedLines.reduce((a, b) => a + b, 0),
      `${seen}; lines per process ${submittedLines}`,
    ).toBe(jobs.length);

    // Both processes were live: each had a schedules worker.
    const workers = await env.queues.get(SCHEDULES_QUEUE).getWorkersCount();
    expect(workers).toBeGreaterThanOrEqual(2);
    const count = await env.db
      .selectFrom('jobs')
      .select(sql<number>`count(*)`.as('n'))
      .where('type', '=', 'test')
      .executeTakeFirstOrThrow();
    expect(count.n).toBe(jobs.length);
  });

  test("the workers' sync restores schedulers Redis lost, from PostgreSQL, and drops ones no longer defined", async () => {
    const put = await op('PUT', '/v1/schedules/restored', { type: 'test', payload: {}, cron: '0 0 1 1 *' });
    expect(put.status).toBe(201);
    await env.queues.get(SCHEDULES_QUEUE).removeJobScheduler('restored');
    await env.queues
      .get(SCHEDULES_QUEUE)
      .upsertJobScheduler('orphan', { every: 60_000 }, { name: 'tick', data: { schedule: 'orphan' } });
    expect(await scheduler('restored')).toBeUndefined();
    // What every worker process runs at start and each minute.
    expect(await syncSchedulers(env.db, env.queues)).toEqual({ installed: ['restored'], removed: ['orphan'] });
    expect(await scheduler('restored')).toMatchObject({ pattern: '0 0 1 1 *' });
    expect(await scheduler('orphan')).toBeUndefined();
    expect(await syncSchedulers(env.db, env.queues)).toEqual({ installed: [], removed: [] });
  });

  test('the demo seed installs a nightly recommendations batch and a daily report with its email', async () => {
    await createTenant(env.db, 'demo');
    expect(await installDemoSchedules(env.config, env.db, env.registry, 'demo')).toEqual([
      'nightly-recommendations',
      'daily-operations-report',
    ]);
    const list = (await op('GET', '/v1/schedules')).body.items as { name: string; next_run_at: string | null }[];
    const byName = Object.fromEntries(list.map((s) => [s.name, s]));
    expect(byName['nightly-recommendations']).toMatchObject({
      type: 'recommendations',
      payload: { all_users: true },
      cron: '0 2 * * *',
      tenant: 'demo',
    });
    expect(byName['daily-operations-report']).toMatchObject({
      type: 'report',
      payload: { kind: 'jobs', notify: ['operators@example.com'] },
      cron: '0 6 * * *',
    });
    for (const s of [byName['nightly-recommendations'], byName['daily-operations-report']])
      expect(Date.parse(s.next_run_at!)).toBeGreaterThan(Date.now());
    // Seeding again replaces, never duplicates.
    await installDemoSchedules(env.config, env.db, env.registry, 'demo');
    expect(await env.queues.get(SCHEDULES_QUEUE).getJobSchedulersCount()).toBe(
      (await op('GET', '/v1/schedules')).body.items.length,
    );
  });
});
