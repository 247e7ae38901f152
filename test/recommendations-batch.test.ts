// {all_users: true}: one child ledger job per chunk, chunks retried on their own, the parent's counts and progress.
// Faults are real: PostgreSQL triggers that refuse some users' result rows.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSynthetic } from '../src/jobs/recommendations/data.js';
import { synthesize } from '../src/jobs/recommendations/synth.js';
import { client, createTestEnv, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
let tenant: string;
const data = synthesize({ seed: 5, movies: 200, users: 40, ratingsPerUser: 25 });

beforeAll(async () => {
  env = await createTestEnv('reco_batch', { env: { RECO_CHUNK_USERS: '10' } });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
  await writeSynthetic(env.db, tenant, data);
  await env.startWorkers(['recommendations', 'recommendations-chunk']);
});

afterAll(async () => {
  await env?.close();
});

const children = (parent: string) =>
  env.db.selectFrom('jobs').selectAll().where('parent_id', '=', parent).orderBy('created_at').execute();

describe('batch recommendations', () => {
  it('fans out per chunk; a failing chunk retries on its own; the parent counts what failed', async () => {
    // u00015's chunk fails once (a sequence survives the rollback), u00035's chunk always.
    await sql`create sequence fault_once`.execute(env.db);
    await sql`create function refuse_some() returns trigger language plpgsql as $$
      begin
        if new.user_id = 'u00015' and nextval('fault_once') = 1 then raise exception 'injected transient fault'; end if;
        if new.user_id = 'u00035' then raise exception 'injected permanent fault'; end if;
        return new;
      end $$`.execute(env.db);
    await sql`create trigger refuse_some before insert on recommendations for each row execute function refuse_some()`.execute(
      env.db,
    );

    const r = await api('POST', '/v1/jobs', { type: 'recommendations', payload: { all_users: true } });
    expect(r.status).toBe(202);
    const id = r.body.id;
    const seen = new Set<number>();
    const done = await waitFor(
      async () => {
        const j = (await api('GET', `/v1/jobs/${id}`)).body;
        seen.add(j.progress);
        return ['succeeded', 'failed'].includes(j.state) ? j : undefined;
      },
      { timeout: 45_000, interval: 100, what: 'the batch to end' },
    );
    expect(done.state).toBe('succeeded');
    expect(done.result).toEqual({ users: 40, succeeded: 30, failed: 10, chunks: 4 });
    // Progress moved as chunks finished (the failing chunk's backoff keeps it at 75 a while).
    expect([...seen].some((p) => p > 0 && p < 100)).toBe(true);

    const kids = await children(id);
    expect(kids).toHaveLength(4);
    for (const k of kids) expect(k).toMatchObject({ tenant, type: 'recommendations-chunk', parent_id: id });
    const byUser = (u: string) => kids.find((k) => (k.payload as { user_ids: string[] }).user_ids.includes(u))!;
    expect(byUser('u00015')).toMatchObject({ state: 'succeeded', attempts: 2 });
    expect(byUser('u00035')).toMatchObject({ state: 'failed', attempts: 3 });
    expect(byUser('u00035').error).toMatchObject({ message: expect.stringContaining('injected permanent fault') });
    expect(byUser('u00001')).toMatchObject({ state: 'succeeded', attempts: 1, result: { users: 10, succeeded: 10 } });
    // Children are visible to the tenant like any job.
    const listed = await api('GET', '/v1/jobs?type=recommendations-chunk');
    expect(listed.body.items).toHaveLength(4);

    const rows = await env.db
      .selectFrom('recommendations')
      .select(['user_id', 'job_id'])
      .where('tenant', '=', tenant)
      .execute();
    expect(rows).toHaveLength(30);
    await sql`drop trigger refuse_some on recommendations`.execute(env.db);
  });

  it('a second batch overwrites every user, and a user GET reads the stored result', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'recommendations', payload: { all_users: true } });
    const done = await waitFor(
      async () => {
        const j = (await api('GET', `/v1/jobs/${r.body.id}`)).body;
        return ['succeeded', 'failed'].includes(j.state) ? j : undefined;
      },
      { timeout: 30_000, what: 'the batch to end' },
    );
    expect(done.result).toEqual({ users: 40, succeeded: 40, failed: 0, chunks: 4 });
    expect(done.progress).toBe(100);
    const kids = new Set((await children(r.body.id)).map((k) => k.id));
    const rows = await env.db
      .selectFrom('recommendations')
      .select(['user_id', 'job_id', 'strategy'])
      .where('tenant', '=', tenant)
      .execute();
    expect(rows).toHaveLength(40);
    for (const row of rows) {
      expect(kids.has(row.job_id!)).toBe(true);
      expect(row.strategy).toBe('item_knn');
    }
    const got = await api('GET', '/v1/users/u00035/recommendations');
    expect(got.status).toBe(200);
    expect(got.body.items).toHaveLength(10);
  });

  it('cancelling a batch cancels the chunks that have not started', async () => {
    await sql`create function slow_insert() returns trigger language plpgsql as $$ begin perform pg_sleep(0.2); return new; end $$`.execute(
      env.db,
    );
    await sql`create trigger slow_insert before insert on recommendations for each row execute function slow_insert()`.execute(
      env.db,
    );
    try {
      // Every user has a row by now, so the upsert's insert trigger fires for each: 2 s per chunk.
      const r = await api('POST', '/v1/jobs', { type: 'recommendations', payload: { all_users: true } });
      await waitFor(async () => (await children(r.body.id)).some((k) => k.state === 'running'), {
        what: 'a chunk to start',
      });
      expect((await api('POST', `/v1/jobs/${r.body.id}/cancel`)).status).toBe(202);
      const parent = await waitFor(async () => {
        const j = (await api('GET', `/v1/jobs/${r.body.id}`)).body;
        return j.state === 'cancelled' ? j : undefined;
      });
      expect(parent.state).toBe('cancelled');
      const kids = await waitFor(async () => {
        const k = await children(r.body.id);
        return k.every((x) => ['succeeded', 'failed', 'cancelled'].includes(x.state)) ? k : undefined;
      });
      expect(kids.filter((k) => k.state === 'cancelled').length).toBeGreaterThanOrEqual(1);
    } finally {
      await sql`drop trigger slow_insert on recommendations`.execute(env.db);
    }
  });

  it('a batch past its time limit stops waiting but leaves its chunks to run; a later attempt collects them', async () => {
    await sql`create or replace function slow_insert() returns trigger language plpgsql as $$ begin perform pg_sleep(0.2); return new; end $$`.execute(
      env.db,
    );
    await sql`create trigger slow_insert before insert on recommendations for each row execute function slow_insert()`.execute(
      env.db,
    );
    try {
      // 2 s per chunk, two at a time: each attempt of the parent times out while chunks are still waiting.
      const r = await api('POST', '/v1/jobs', {
        type: 'recommendations',
        payload: { all_users: true },
        timeout_ms: 1_500,
      });
      expect(r.status).toBe(202);
      const parent = await waitFor(
        async () => {
          const j = (await api('GET', `/v1/jobs/${r.body.id}`)).body;
          return ['succeeded', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
        },
        { timeout: 60_000, what: 'the batch to end' },
      );
      const kids = await waitFor(
        async () => {
          const k = await children(r.body.id);
          return k.length && k.every((x) => ['succeeded', 'failed', 'cancelled'].includes(x.state)) ? k : undefined;
        },
        { timeout: 60_000, what: 'the chunks to end' },
      );
      // No chunk was cancelled by the parent's timeouts: every one ran and succeeded.
      expect(kids.map((k) => k.state)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);
      expect(parent.attempts).toBeGreaterThanOrEqual(2);
      if (parent.state === 'succeeded') expect(parent.result).toMatchObject({ users: 40, succeeded: 40, failed: 0 });
      else expect(parent).toMatchObject({ state: 'failed', error: { code: 'timeout' } });
    } finally {
      await sql`drop trigger slow_insert on recommendations`.execute(env.db);
    }
  });

  it('a batch over a tenant with no ratings succeeds with zero users', async () => {
    const t = await tenantWithKeys(env);
    const empty = client(env.app, t.clientKey);
    const r = await empty('POST', '/v1/jobs', { type: 'recommendations', payload: { all_users: true } });
    const done = await waitFor(async () => {
      const j = (await empty('GET', `/v1/jobs/${r.body.id}`)).body;
      return j.state === 'succeeded' ? j : undefined;
    });
    expect(done.result).toEqual({ users: 0, succeeded: 0, failed: 0, chunks: 0 });
  });
});
