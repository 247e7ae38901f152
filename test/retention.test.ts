// Retention: which rows a pass removes (old finished jobs and everything of theirs, old audit entries) and which it
// keeps (live and recent jobs, a parent whose child is kept, a job being retried this moment, files with their own
// expiry); that it works in batches; that one pass runs at a time across processes; and that status reads keep
// answering while it runs. Real PostgreSQL, the ledger seeded the way the platform writes it (state changes through
// UPDATEs, so the timeline trigger records them).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type Db } from '../src/db/index.js';
import { insertJobs, resetForRetry } from '../src/db/jobs.js';
import type { JobState } from '../src/domain.js';
import { newId } from '../src/ids.js';
import { retentionPruned } from '../src/metrics.js';
import { pruneOnce, type RetentionOptions } from '../src/workers/retention.js';
import { client, createTestEnv, ROOT, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let tenant: string;
let api: ReturnType<typeof client>;

beforeAll(async () => {
  // Status reads straight from the ledger (no answers from memory), so reads during a prune really read it.
  env = await createTestEnv('retention', { env: { STATUS_CACHE_MS: '0' } });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
});

afterAll(async () => {
  await env?.close();
});

const opts = (extra: Partial<RetentionOptions> = {}): RetentionOptions => ({
  jobDays: 30,
  auditDays: 365,
  batch: 1_000,
  pauseMs: 0,
  ...extra,
});

/**
 * A job that ended `daysAgo` days ago in `state` (or is still live), with a timeline (the trigger's rows), two log
 * lines, an email delivery and a webhook try.
 */
async function seedJob(state: JobState, daysAgo: number, extra: { parent_id?: string } = {}): Promise<string> {
  const [job] = await insertJobs(env.db, [
    {
      id: newId(),
      tenant,
      type: 'test',
      state: 'queued',
      priority: 'normal',
      payload: '{}',
      max_attempts: 1,
      ...extra,
    },
  ]);
  const live = state === 'queued' || state === 'delayed' || state === 'running';
  await sql`update jobs set state = 'running', attempts = 1, started_at = now() - make_interval(days => ${daysAgo})
    where id = ${job.id}`.execute(env.db);
  await sql`update jobs set state = ${state},
    finished_at = ${live ? null : sql`now() - make_interval(days => ${daysAgo})`}
    where id = ${job.id}`.execute(env.db);
  await sql`insert into job_logs (job_id, generation, at, message, fields, bytes)
    values (${job.id}, 0, now(), 'one', null, 3), (${job.id}, 0, now(), 'two', null, 3)`.execute(env.db);
  await sql`insert into email_deliveries (job_id, recipient, state, message_id)
    values (${job.id}, 'a@example.com', 'sent', ${`<${job.id}@x>`})`.execute(env.db);
  await sql`insert into webhook_deliveries (job_id, tenant, message_id, event, url, attempt, outcome, duration_ms)
    values (${job.id}, ${tenant}, ${`msg_${job.id}`}, 'job.finished', 'https://example.com/hook', 1, 'delivered', 5)`.execute(
    env.db,
  );
  return job.id;
}

/** Many old finished jobs at once (one statement), each with one timeline row. */
async function seedOldJobs(n: number, daysAgo = 40): Promise<void> {
  await sql`
    with j as (
      insert into jobs (id, tenant, type, state, priority, payload, max_attempts, created_at, updated_at, finished_at)
      select gen_random_uuid(), ${tenant}, 'test', 'succeeded', 'normal', '{}', 1, now() - make_interval(days => ${daysAgo + 1}),
        now(), now() - make_interval(days => ${daysAgo})
      from generate_series(1, ${n})
      returning id
    )
    insert into job_events (job_id, generation, attempt, from_state, to_state) select id, 0, 1, 'running', 'succeeded' from j`.execute(
    env.db,
  );
}

async function counts(ids: string[]) {
  const n = async (table: 'jobs' | 'job_events' | 'job_logs' | 'email_deliveries' | 'webhook_deliveries') => {
    const col = table === 'jobs' ? 'id' : 'job_id';
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)}
      where ${sql.ref(col)} = any(${ids}::uuid[])`.execute(env.db);
    return rows[0].n;
  };
  return {
    jobs: await n('jobs'),
    job_events: await n('job_events'),
    job_logs: await n('job_logs'),
    email_deliveries: await n('email_deliveries'),
    webhook_deliveries: await n('webhook_deliveries'),
  };
}

async function clearLedger() {
  await sql`truncate jobs, job_events, job_logs, email_deliveries, webhook_deliveries, audit_log cascade`.execute(
    env.db,
  );
}

describe('retention', () => {
  it('removes exactly the old finished jobs and everything of theirs; keeps live and recent ones', async () => {
    await clearLedger();
    const old = [await seedJob('succeeded', 40), await seedJob('failed', 31), await seedJob('cancelled', 35)];
    const kept = [
      await seedJob('succeeded', 29),
      await seedJob('failed', 1),
      await seedJob('queued', 90),
      await seedJob('running', 90),
      await seedJob('delayed', 90),
    ];
    // A file one old job wrote: it has its own expiry, and stays downloadable.
    const fileId = `file_${newId().replace(/-/g, '')}`;
    const bytes = Buffer.from('report');
    await env.storage.put(`${tenant}/${fileId}`, bytes);
    await env.db
      .insertInto('files')
      .values({
        id: fileId,
        tenant,
        content_type: 'text/plain',
        bytes: bytes.length,
        sha256: 'x',
        storage_key: `${tenant}/${fileId}`,
        job_id: old[0],
        name: 'r',
      })
      .execute();
    const before = await counts(old);
    expect(before).toEqual({ jobs: 3, job_events: 6, job_logs: 6, email_deliveries: 3, webhook_deliveries: 3 });
    const keptBefore = await counts(kept);

    const pruned = async (table: string) =>
      (await retentionPruned.get()).values.find((v) => v.labels.table === table)?.value ?? 0;
    const metricBefore = { jobs: await pruned('jobs'), logs: await pruned('job_logs') };
    const r = await pruneOnce(env.db, opts());
    expect(r?.deleted).toEqual({ ...before, audit_log: 0 });
    expect(await pruned('jobs')).toBe(metricBefore.jobs + 3);
    expect(await pruned('job_logs')).toBe(metricBefore.logs + 6);
    expect(await counts(old)).toEqual({
      jobs: 0,
      job_events: 0,
      job_logs: 0,
      email_deliveries: 0,
      webhook_deliveries: 0,
    });
    expect(await counts(kept)).toEqual(keptBefore);
    expect(keptBefore.jobs).toBe(5);
    const file = await env.db.selectFrom('files').selectAll().where('id', '=', fileId).executeTakeFirstOrThrow();
    expect(file.job_id).toBeNull();
    const download = await api('GET', `/v1/files/${fileId}`);
    expect([download.status, download.body]).toEqual([200, 'report']);
    // Status reads: the kept answer, the pruned are gone.
    expect((await api('GET', `/v1/jobs/${kept[0]}`)).status).toBe(200);
    expect((await api('GET', `/v1/jobs/${old[0]}`)).status).toBe(404);
    // A second pass finds nothing.
    expect((await pruneOnce(env.db, opts()))?.batches).toEqual({ jobs: 0, audit_log: 0 });
  });

  it('removes audit entries older than their own age and keeps younger ones', async () => {
    await clearLedger();
    const entry = (days: number) => ({
      id: newId(),
      at: sql<Date>`now() - make_interval(days => ${days})` as unknown as Date,
      action: 'queue.pause',
      target_kind: 'queue' as const,
      target: `q${days}`,
    });
    await env.db
      .insertInto('audit_log')
      .values([entry(400), entry(366), entry(364), entry(40), entry(0)])
      .execute();
    const r = await pruneOnce(env.db, opts());
    expect(r?.deleted.audit_log).toBe(2);
    const left = await env.db.selectFrom('audit_log').select('target').orderBy('target').execute();
    expect(left.map((e) => e.target)).toEqual(['q0', 'q364', 'q40']);
    // AUDIT_RETENTION_DAYS=0 keeps everything; so does JOB_RETENTION_DAYS=0 for jobs.
    await seedOldJobs(3);
    const none = await pruneOnce(env.db, opts({ jobDays: 0, auditDays: 0 }));
    expect(none).toMatchObject({ batches: { jobs: 0, audit_log: 0 } });
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from jobs`.execute(env.db);
    expect(rows[0].n).toBe(3);
    expect(await env.db.selectFrom('audit_log').select('id').execute()).toHaveLength(3);
  });

  it('works in batches of RETENTION_BATCH jobs; a parent goes only after its children', async () => {
    await clearLedger();
    await seedOldJobs(25);
    const seen: number[] = [];
    const r = await pruneOnce(env.db, opts({ batch: 10, onBatch: (_, n) => void seen.push(n) }));
    expect(seen).toEqual([10, 10, 5]);
    expect(r?.batches.jobs).toBe(3);
    expect(r?.deleted.jobs).toBe(25);
    expect(r?.deleted.job_events).toBe(25);

    // A parent whose child is live stays, and its child keeps its parent; once the child ended long enough ago, both go.
    const parent = await seedJob('succeeded', 50);
    const child = await seedJob('running', 50, { parent_id: parent });
    const oldChild = await seedJob('succeeded', 45, { parent_id: parent });
    await pruneOnce(env.db, opts());
    expect((await counts([parent, child])).jobs).toBe(2);
    expect((await counts([oldChild])).jobs).toBe(0);
    const row = await env.db.selectFrom('jobs').select('parent_id').where('id', '=', child).executeTakeFirstOrThrow();
    expect(row.parent_id).toBe(parent);
    await sql`update jobs set state = 'succeeded', finished_at = now() - interval '40 days' where id = ${child}`.execute(
      env.db,
    );
    const steps: number[] = [];
    await pruneOnce(env.db, opts({ onBatch: (_, n) => void steps.push(n) }));
    // The child in one batch, its parent in the next.
    expect(steps).toEqual([1, 1]);
    expect((await counts([parent, child])).jobs).toBe(0);
  });

  it('skips a job a retry is resetting at that moment, and keeps it once retried', async () => {
    await clearLedger();
    const failed = await seedJob('failed', 40);
    const gen = await env.db.selectFrom('jobs').select('generation').where('id', '=', failed).executeTakeFirstOrThrow();
    const other = createDb(env.config.DATABASE_URL, 1);
    try {
      await other.transaction().execute(async (tx) => {
        expect(await resetForRetry(tx, [{ id: failed, generation: gen.generation }])).toHaveLength(1);
        // The retry has not committed: the row is locked, the pass skips it.
        const r = await pruneOnce(env.db, opts());
        expect(r?.deleted.jobs).toBe(0);
      });
    } finally {
      await other.destroy();
    }
    expect((await pruneOnce(env.db, opts()))?.deleted.jobs).toBe(0);
    const row = await env.db.selectFrom('jobs').select('state').where('id', '=', failed).executeTakeFirstOrThrow();
    expect(row.state).toBe('queued');
  });

  it('runs one pass at a time: a second process asking while a pass runs gets the lock refused', async () => {
    await clearLedger();
    await seedOldJobs(30);
    const second: Db = createDb(env.config.DATABASE_URL, 2);
    try {
      const refused: unknown[] = [];
      const r = await pruneOnce(
        env.db,
        opts({
          batch: 10,
          // In the middle of this pass, another process (its own pool, its own session) tries a pass.
          onBatch: async () => void refused.push(await pruneOnce(second, opts({ batch: 10 }))),
        }),
      );
      expect(refused).toEqual([undefined, undefined, undefined]);
      expect(r?.deleted.jobs).toBe(30);
      // Once the pass is over, the lock is free for the other process.
      expect(await pruneOnce(second, opts())).toMatchObject({ batches: { jobs: 0, audit_log: 0 } });
    } finally {
      await second.destroy();
    }
  });

  it('status reads keep answering while a pass prunes', async () => {
    await clearLedger();
    const kept = await Promise.all(Array.from({ length: 20 }, () => seedJob('succeeded', 1)));
    await seedOldJobs(3_000);
    let reads = 0;
    const statuses: number[] = [];
    let pruning = true;
    const reader = (async () => {
      while (pruning) {
        for (const id of kept) {
          statuses.push((await api('GET', `/v1/jobs?limit=1&type=test&state=succeeded`)).status);
          statuses.push((await api('GET', `/v1/jobs/${id}`)).status);
          reads += 2;
        }
      }
    })();
    const readsDuring: number[] = [];
    const r = await pruneOnce(
      env.db,
      opts({
        batch: 250,
        // Each batch waits until the reader has been answered again, so reads and batches interleave by construction.
        onBatch: async () => {
          const at = reads;
          while (reads === at) await new Promise((res) => setTimeout(res, 1));
          readsDuring.push(reads);
        },
      }),
    ).finally(() => {
      pruning = false;
    });
    await reader;
    expect(r?.batches.jobs).toBe(12);
    expect(r?.deleted.jobs).toBe(3_000);
    expect(readsDuring).toHaveLength(12);
    expect(statuses.length).toBeGreaterThanOrEqual(12);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect((await counts(kept)).jobs).toBe(20);
  });

  it('`cli prune` runs one pass now and prints what it removed', async () => {
    await clearLedger();
    await seedOldJobs(7);
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'prune'], {
      cwd: ROOT,
      env: { ...process.env, ...env.env, RETENTION_BATCH: '5' },
    });
    expect(JSON.parse(stdout)).toMatchObject({ ran: true, batches: { jobs: 2 }, deleted: { jobs: 7, job_events: 7 } });
  });
});
