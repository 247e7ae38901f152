// The jobs ledger: every state change of every accepted job goes through these functions.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, JobError, JobRow, JobState, NewJobRow, Priority } from './types.js';

type Q = Kysely<Database> | Transaction<Database>;

export const TERMINAL: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];
export const LIVE: readonly JobState[] = ['queued', 'delayed', 'running'];

/** The public shape of a job (docs/api.md "Jobs"). */
export interface ApiJob {
  id: string;
  type: string;
  state: JobState;
  priority: Priority;
  payload: unknown;
  progress: number;
  attempts: number;
  max_attempts: number;
  result: unknown;
  error: JobError | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  run_at: string | null;
  tenant: string;
  callback_url?: string;
  parent_id?: string;
  cancel_requested?: boolean;
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function toApiJob(row: JobRow): ApiJob {
  const job: ApiJob = {
    id: row.id,
    type: row.type,
    state: row.state,
    priority: row.priority,
    payload: row.payload,
    progress: row.progress,
    attempts: row.attempts,
    max_attempts: row.max_attempts,
    result: row.result ?? null,
    error: row.error ?? null,
    created_at: row.created_at.toISOString(),
    started_at: iso(row.started_at),
    finished_at: iso(row.finished_at),
    run_at: iso(row.run_at),
    tenant: row.tenant,
  };
  if (row.callback_url) job.callback_url = row.callback_url;
  if (row.parent_id) job.parent_id = row.parent_id;
  if (row.cancel_requested && !TERMINAL.includes(row.state)) job.cancel_requested = true;
  return job;
}

/**
 * Inserts the rows; they come back in input order. One fixed statement over unnest'ed column arrays whatever the
 * row count: a multi-row VALUES list made kysely compile, and PostgreSQL parse and plan, a new statement of up to
 * 12 parameters per row for every batch.
 */
export async function insertJobs(db: Q, rows: NewJobRow[]): Promise<JobRow[]> {
  if (rows.length === 0) return [];
  const col = <K extends keyof NewJobRow>(k: K) => rows.map((r) => r[k] ?? null);
  const { rows: inserted } = await sql<JobRow>`
    insert into jobs (id, tenant, type, state, priority, payload, max_attempts, callback_url, idempotency_key, request_hash, parent_id, run_at)
    select * from unnest(${col('id')}::uuid[], ${col('tenant')}::text[], ${col('type')}::text[], ${col('state')}::text[],
      ${col('priority')}::text[], ${col('payload')}::jsonb[], ${col('max_attempts')}::int[], ${col('callback_url')}::text[],
      ${col('idempotency_key')}::text[], ${col('request_hash')}::text[], ${col('parent_id')}::uuid[], ${col('run_at')}::timestamptz[])
    returning *`.execute(db);
  return rows.length === 1
    ? inserted
    : (inOrder(
        rows.map((r) => r.id),
        inserted,
      ) as JobRow[]);
}

/** A job by id; with `tenant`, only that tenant's (another tenant's job is "not found"). */
export async function findJob(db: Q, id: string, tenant?: string): Promise<JobRow | undefined> {
  let q = db.selectFrom('jobs').selectAll().where('id', '=', id);
  if (tenant !== undefined) q = q.where('tenant', '=', tenant);
  return q.executeTakeFirst();
}

/** Jobs by id, any tenant, in no particular order: one fixed statement for a batch of status reads. */
export async function findJobsByIds(db: Q, ids: string[]): Promise<JobRow[]> {
  const { rows } = await sql<JobRow>`select * from jobs where id = any(${ids}::uuid[])`.execute(db);
  return rows;
}

export async function findByIdempotencyKey(db: Q, tenant: string, key: string): Promise<JobRow | undefined> {
  return db
    .selectFrom('jobs')
    .selectAll()
    .where('tenant', '=', tenant)
    .where('idempotency_key', '=', key)
    .executeTakeFirst();
}

/** Frees an idempotency key older than 24 h so it can name a new job. */
export async function expireIdempotencyKey(db: Q, tenant: string, key: string): Promise<void> {
  await db
    .updateTable('jobs')
    .set({ idempotency_key: null, request_hash: null })
    .where('tenant', '=', tenant)
    .where('idempotency_key', '=', key)
    .where('created_at', '<', sql<Date>`now() - interval '24 hours'`)
    .execute();
}

export interface ListFilter {
  tenant?: string;
  type?: string;
  state?: JobState;
  before?: string;
  limit: number;
}

/** Newest first; keyset pagination on the UUIDv7 id. */
export async function listJobs(db: Q, f: ListFilter): Promise<JobRow[]> {
  let q = db.selectFrom('jobs').selectAll();
  if (f.tenant !== undefined) q = q.where('tenant', '=', f.tenant);
  if (f.type) q = q.where('type', '=', f.type);
  if (f.state) q = q.where('state', '=', f.state);
  if (f.before) q = q.where('id', '<', f.before);
  return q.orderBy('id', 'desc').limit(f.limit).execute();
}

// The worker's hot path: fixed statement text (arrays, not one placeholder per id), so each batch costs PostgreSQL
// the same parse whatever its size, and kysely compiles nothing per batch.
const startRuns = (ids: string[]) => sql<JobRow>`
    update jobs set state = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()), updated_at = now()
    where id = any(${ids}::uuid[]) and state in ('queued', 'delayed', 'running') and cancel_requested = false
    returning jobs.*`;

const finishRuns = (done: { id: string; result: unknown }[]) => sql<JobRow>`
    update jobs set state = 'succeeded', progress = 100, result = v.result::jsonb, error = null,
      finished_at = now(), updated_at = now()
    from unnest(${done.map((d) => d.id)}::uuid[], ${done.map((d) => JSON.stringify(d.result ?? null))}::text[]) as v(id, result)
    where jobs.id = v.id and jobs.state in ('queued', 'delayed', 'running')
    returning jobs.*`;

function inOrder(ids: readonly string[], rows: readonly JobRow[]): (JobRow | undefined)[] {
  const byId = new Map(rows.map((r) => [r.id, r]));
  return ids.map((id) => byId.get(id));
}

/**
 * Called when workers start runs, for many jobs in one statement (the worker's group commit); rows come back in
 * `ids` order. A job that must not run (terminal, cancelled, or unknown to the ledger) comes back undefined.
 */
export async function markRunningMany(db: Q, ids: string[]): Promise<(JobRow | undefined)[]> {
  if (ids.length === 0) return [];
  const { rows } = await startRuns(ids).execute(db);
  return inOrder(ids, rows);
}

/** Runs that succeeded, many in one statement; rows come back in input order. */
export async function markSucceededMany(
  db: Q,
  done: { id: string; result: unknown }[],
): Promise<(JobRow | undefined)[]> {
  if (done.length === 0) return [];
  const { rows } = await finishRuns(done).execute(db);
  return inOrder(
    done.map((d) => d.id),
    rows,
  );
}

/**
 * markRunningMany and markSucceededMany in one statement (one round trip, one commit), for a worker whose runs start
 * and end together. A job in both lists (it cannot be, unless a run is reported twice) goes as two statements, in
 * that order: one statement may not change a row twice.
 */
export async function markRunningAndSucceededMany(
  db: Q,
  ids: string[],
  done: { id: string; result: unknown }[],
): Promise<{ running: (JobRow | undefined)[]; succeeded: (JobRow | undefined)[] }> {
  const starting = new Set(ids);
  if (!ids.length || !done.length || done.some((d) => starting.has(d.id))) {
    return { running: await markRunningMany(db, ids), succeeded: await markSucceededMany(db, done) };
  }
  const { rows } = await sql<JobRow & { op: 'r' | 's' }>`
    with r as (${startRuns(ids)}), s as (${finishRuns(done)})
    select 'r' as op, * from r union all select 's' as op, * from s`.execute(db);
  const pick = (op: 'r' | 's') => rows.filter((row) => row.op === op).map(({ op: _, ...row }) => row as JobRow);
  return {
    running: inOrder(ids, pick('r')),
    succeeded: inOrder(
      done.map((d) => d.id),
      pick('s'),
    ),
  };
}

export async function setProgress(db: Q, id: string, progress: number): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({ progress, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('state', '=', 'running')
    .returningAll()
    .executeTakeFirst();
}

/** A failed run: `final` ends the job, otherwise it waits (delayed) for its next attempt. */
export async function markFailed(db: Q, id: string, error: JobError, final: boolean): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({
      state: final ? 'failed' : 'delayed',
      error: JSON.stringify(error),
      finished_at: final ? sql<Date>`now()` : null,
      updated_at: sql<Date>`now()`,
    })
    .where('id', '=', id)
    .where('state', 'in', LIVE)
    .returningAll()
    .executeTakeFirst();
}

export async function markCancelled(
  db: Q,
  id: string,
  states: readonly JobState[] = LIVE,
): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({ state: 'cancelled', finished_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('state', 'in', states)
    .returningAll()
    .executeTakeFirst();
}

export async function requestCancel(db: Q, id: string): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({ cancel_requested: true, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('state', '=', 'running')
    .returningAll()
    .executeTakeFirst();
}

/**
 * failed (or cancelled) → queued with a fresh set of attempts: one job by id, or up to `limit` of a type. Returns
 * the rows it reset; the caller re-enqueues them.
 */
export async function resetForRetry(
  db: Q,
  f: { id?: string; type?: string; limit: number; states?: JobState[] },
): Promise<JobRow[]> {
  const states = f.states ?? ['failed', 'cancelled'];
  let pick = db.selectFrom('jobs').select('id').where('state', 'in', states);
  if (f.type) pick = pick.where('type', '=', f.type);
  if (f.id) pick = pick.where('id', '=', f.id);
  return db
    .updateTable('jobs')
    .set({
      state: 'queued',
      progress: 0,
      attempts: 0,
      result: null,
      error: null,
      cancel_requested: false,
      started_at: null,
      finished_at: null,
      run_at: null,
      updated_at: sql<Date>`now()`,
    })
    .where('id', 'in', pick.orderBy('id').limit(f.limit))
    .where('state', 'in', states)
    .returningAll()
    .execute();
}

/**
 * Jobs that should be in Redis, last changed in [since, until), in id order after `after`. `since` absent: all of
 * them (a full scan).
 */
export async function liveJobsChangedBetween(
  db: Q,
  until: Date,
  since: Date | undefined,
  after: string | undefined,
  limit: number,
): Promise<JobRow[]> {
  let q = db.selectFrom('jobs').selectAll().where('state', 'in', LIVE).where('updated_at', '<', until);
  if (since) q = q.where('updated_at', '>=', since);
  if (after) q = q.where('id', '>', after);
  return q.orderBy('id').limit(limit).execute();
}

/** The database's clock minus `ms`: ledger timestamps come from it, so horizons must too. */
export async function dbNowMinus(db: Q, ms: number): Promise<Date> {
  const { t } = await db
    .selectNoFrom(sql<Date>`now() - make_interval(secs => ${ms / 1000})`.as('t'))
    .executeTakeFirstOrThrow();
  return t;
}
