// A worker process killed (SIGKILL) in the middle of a batch: another worker picks the parent up once its lock
// lapses (WORKER_LOCK_MS is 3 s in tests), finds the chunks
// it had created in the ledger (no second set), and the batch ends with every user done.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSynthetic } from '../src/jobs/recommendations/data.js';
import { synthesize } from '../src/jobs/recommendations/synth.js';
import { client, createTestEnv, startProcess, tenantWithKeys, waitFor, type Proc, type TestEnv } from './helpers.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
let tenant: string;
const procs: Proc[] = [];

beforeAll(async () => {
  env = await createTestEnv('reco_chaos', { env: { RECO_CHUNK_USERS: '10' }, testJobs: false });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
  await writeSynthetic(env.db, tenant, synthesize({ seed: 9, movies: 150, users: 30, ratingsPerUser: 20 }));
  // Every result row takes a while to write, so the batch is still running when its worker dies.
  await sql`create function slow_insert() returns trigger language plpgsql as $$ begin perform pg_sleep(0.1); return new; end $$`.execute(
    env.db,
  );
  await sql`create trigger slow_insert before insert on recommendations for each row execute function slow_insert()`.execute(
    env.db,
  );
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await env?.close();
});

describe('batch recommendations survive a worker crash', () => {
  it('resumes the parent on another worker without creating the chunks twice', async () => {
    const queues = { QUEUES: 'recommendations,recommendations-chunk' };
    const first = await startProcess('worker', env.env, queues);
    procs.push(first);
    const r = await api('POST', '/v1/jobs', { type: 'recommendations', payload: { all_users: true } });
    const id = r.body.id;
    await waitFor(
      async () => (await env.db.selectFrom('jobs').select('id').where('parent_id', '=', id).execute()).length === 3,
      { what: 'the chunks to be created' },
    );
    await first.stop('SIGKILL');

    // The survivor: workers in this process (starting a second process would double the test's time).
    await env.startWorkers(['recommendations', 'recommendations-chunk']);
    const done = await waitFor(
      async () => {
        const j = (await api('GET', `/v1/jobs/${id}`)).body;
        return ['succeeded', 'failed'].includes(j.state) ? j : undefined;
      },
      { timeout: 50_000, interval: 200, what: 'the batch to end on the second worker' },
    );
    expect(done.state).toBe('succeeded');
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(done.result).toEqual({ users: 30, succeeded: 30, failed: 0, chunks: 3 });
    const kids = await env.db.selectFrom('jobs').select(['state']).where('parent_id', '=', id).execute();
    expect(kids.map((k) => k.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    const rows = await env.db.selectFrom('recommendations').select('user_id').where('tenant', '=', tenant).execute();
    expect(rows).toHaveLength(30);
  });
});
