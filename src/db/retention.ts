// Retention: finished jobs leave the ledger with everything that is theirs, and audit entries leave after their own
// age, in small batches (src/workers/retention.ts runs them). Ages are measured by the database's clock, the clock
// that set finished_at and at.
//
// What belongs to a job and goes with it: its timeline (job_events) and log lines (job_logs), which have no foreign
// key, and its email and webhook deliveries (cascading foreign keys, deleted here in the same statement so a batch
// is one set-based delete per table rather than a trigger per row). Its search-index entries are index entries of
// the jobs row itself (jobs_search_trgm), so they go with the row. What outlives it: files a job wrote or read keep
// their own expiry (FILE_RETENTION_DAYS, extended by use; src/files.ts sweeps them), their job_id is set null by the
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
 * job left, oldest first, with their timelines, logs and deliveries, in one statement. Rows another transaction has
 * locked (a retry resetting the job this very moment) are skipped, and FOR UPDATE re-reads each candidate's state,
 * so a job queued again meanwhile is not taken.
 */
export async function pruneJobsBatch(db: Q, days: number, limit: number): Promise<PrunedJobs> {
  // `= any(array(…))`: an index scan per table whatever the planner guesses of the batch's size (with `in (select …)`
  // it guessed 200 rows and chose to hash-join a sequential scan of the whole of job_events and job_logs).
  const { rows } = await sql<PrunedJobs>`
    with victims as materialized (
      select id from jobs j
      where finished_at < now() - make_interval(days => ${days}) and state in ('succeeded', 'failed', 'cancelled')
        and not exists (select 1 from jobs c where c.parent_id = j.id)
      order by finished_at
      limit ${limit}
      for update skip locked
    ),
    ev as (delete from job_events where job_id = any(array(select id from victims)) returning 1),
    lg as (delete from job_logs where job_id = any(array(select id from victims)) returning 1),
    em as (delete from email_deliveries where job_id = any(array(select id from victims)) returning 1),
    wh as (delete from webhook_deliveries where job_id = any(array(select id from victims)) returning 1),
    jb as (delete from jobs where id = any(array(select id from victims)) returning 1)
    select (select count(*) from jb)::int as jobs, (select count(*) from ev)::int as job_events,
      (select count(*) from lg)::int as job_logs, (select count(*) from em)::int as email_deliveries,
      (select count(*) from wh)::int as webhook_deliveries`.execute(db);
  return rows[0];
}

/** Deletes up to `limit` audit entries written more than `days` days ago, oldest first. */
export async function pruneAuditBatch(db: Q, days: number, limit: number): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    with old as (
      select id from audit_log where at < now() - make_interval(days => ${days}) order by at limit ${limit}
      for update skip locked
    ), gone as (delete from audit_log where id in (select id from old) returning 1)
    select count(*)::int as n from gone`.execute(db);
  return rows[0].n;
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
