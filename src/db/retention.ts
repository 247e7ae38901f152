// Retention: finished jobs leave the ledger with everything that is theirs, and audit entries leave after their own
// age, in small batches (src/workers/retention.ts runs them). Ages are measured by the database's clock, the clock
// that set finished_at and at.
//
// What belongs to a job and goes with it: its timeline (job_events) and log lines (job_logs), which have no foreign
// key, and its email and webhook deliveries (cascading foreign keys, deleted here first so a batch is one set-based
// delete per table rather than a trigger's statement per row). Its search-index entries are index entries of
// the jobs row itself (jobs_search_trgm), so they go with the row. What outlives it: files a job wrote or read keep
// their own expiry (FILE_RETENTION_DAYS, extended by use; src/files/index.ts sweeps them), their job_id is set null by the
// foreign key; a user's latest recommendations stay (job_id set null), as does the audit entry of an action on the
// job until the audit age. A parent job (a recommendations batch) goes only once no child job is left, so a kept
// child never loses its parent.
import { sql } from 'kysely';
import type { Db } from './index.js';

type Q = Db;

/** Rows one batch deleted, per table. */
export interface PrunedJobs {
  jobs: number;
  job_events: number;
  job_logs: number;
  email_deliveries: number;
  webhook_deliveries: number;
}

/**
 * Deletes up to `limit` jobs that ended (succeeded, failed or cancelled) more than `days` days ago and have no child
 * job left, oldest first, with their timelines, logs and deliveries, in one short transaction. Rows another
 * transaction has locked (a retry resetting the job this very moment) are skipped, and FOR UPDATE re-reads each
 * candidate's state, so a job queued again meanwhile is not taken.
 *
 * The ids travel as one array parameter, so PostgreSQL plans each delete knowing how many there are (an index scan),
 * and even a sequential scan would test them by hash. Inside one statement (`= any(array(select … from victims))`) the
 * planner could not know, and with statistics a bulk load had made stale it chose a sequential scan of job_events
 * testing each row against the whole array: 27 s for one batch of 5,000 at 400,000 events (bench/retention.ts).
 */
export async function pruneJobsBatch(db: Q, days: number, limit: number): Promise<PrunedJobs> {
  return db.transaction().execute(async (tx) => {
    const { rows } = await sql<{ id: string }>`
      select id from jobs j
      where finished_at < now() - make_interval(days => ${days}) and state in ('succeeded', 'failed', 'cancelled')
        and not exists (select 1 from jobs c where c.parent_id = j.id)
      order by finished_at
      limit ${limit}
      for update skip locked`.execute(tx);
    const ids = rows.map((r) => r.id);
    const gone = async (table: keyof PrunedJobs) => {
      if (!ids.length) return 0;
      const col = table === 'jobs' ? 'id' : 'job_id';
      const r = await sql`delete from ${sql.table(table)} where ${sql.ref(col)} = any(${ids}::uuid[])`.execute(tx);
      return Number(r.numAffectedRows ?? 0);
    };
    // Dependents first; the cascading foreign keys then find nothing left to delete.
    const job_events = await gone('job_events');
    const job_logs = await gone('job_logs');
    const email_deliveries = await gone('email_deliveries');
    const webhook_deliveries = await gone('webhook_deliveries');
    const jobs = await gone('jobs');
    return { jobs, job_events, job_logs, email_deliveries, webhook_deliveries };
  });
}

/** Deletes up to `limit` audit entries written more than `days` days ago, oldest first (ids as one array, as above). */
export async function pruneAuditBatch(db: Q, days: number, limit: number): Promise<number> {
  return db.transaction().execute(async (tx) => {
    const { rows } = await sql<{ id: string }>`
      select id from audit_log where at < now() - make_interval(days => ${days}) order by at limit ${limit}
      for update skip locked`.execute(tx);
    if (!rows.length) return 0;
    const r = await sql`delete from audit_log where id = any(${rows.map((e) => e.id)}::uuid[])`.execute(tx);
    return Number(r.numAffectedRows ?? 0);
  });
}

/** The advisory lock key of retention passes: one pass at a time per database, across every worker process. */
const RETENTION_LOCK = sql`hashtext('movie-jobs:retention')`;

/**
 * Runs `fn` on one connection holding the retention lock, or returns undefined at once when another session holds
 * it. A session lock, released at the end, or by PostgreSQL when the connection dies with its process.
 */
export async function withRetentionLock<T>(db: Db, fn: (conn: Db) => Promise<T>): Promise<T | undefined> {
  return db.connection().execute(async (conn) => {
    const { rows } = await sql<{ got: boolean }>`select pg_try_advisory_lock(${RETENTION_LOCK}) as got`.execute(conn);
    if (!rows[0].got) return undefined;
    try {
      return await fn(conn as Db);
    } finally {
      await sql`select pg_advisory_unlock(${RETENTION_LOCK})`.execute(conn);
    }
  });
}
