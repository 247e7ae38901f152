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
    insert into jobs (id, tenant, type, state, priority, payload, max_attempts, callback_url, idempotency_key, request_hash, parent_id, run_at, trace_context)
    select * from unnest(${col('id')}::uuid[], ${col('tenant')}::text[], ${col('type')}::text[], ${col('state')}::text[],
      ${col('priority')}::text[], ${col('payload')}::jsonb[], ${col('max_attempts')}::int[], ${col('callback_url')}::text[],
      ${col('idempotency_key')}::text[], ${col('request_hash')}::text[], ${col('parent_id')}::uuid[], ${col('run_at')}::timestamptz[],
      ${col('trace_context')}::text[])
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

/**
 * Clients' Idempotency-Keys are stored under this prefix, internal keys (`schedule:…`, `report_ready:…`) never are:
 * whatever a client sends, it cannot name (and so pre-empt or read) an internal key.
 */
export function clientIdempotencyKey(key: string): string {
  return `client:${key}`;
}

/** How long a client's key names its first job. */
const IDEMPOTENCY_WINDOW = sql`interval '24 hours'`;

/**
 * The job a client's (stored) key names, and whether the key's window has passed, by the database's clock: the
 * same clock that set created_at and that expireIdempotencyKey checks, so the two can never disagree.
 */
export async function findByClientKey(
  db: Q,
  tenant: string,
  key: string,
): Promise<{ job: JobRow; expired: boolean } | undefined> {
  const row = await db
    .selectFrom('jobs')
    .selectAll()
    .select(sql<boolean>`created_at < now() - ${IDEMPOTENCY_WINDOW}`.as('key_expired'))
    .where('tenant', '=', tenant)
    .where('idempotency_key', '=', key)
    .executeTakeFirst();
  if (!row) return undefined;
  const { key_expired, ...job } = row;
  return { job, expired: key_expired };
}

/** Frees an idempotency key older than 24 h so it can name a new job. */
export async function expireIdempotencyKey(db: Q, tenant: string, key: string): Promise<void> {
  await db
    .updateTable('jobs')
    .set({ idempotency_key: null, request_hash: null })
    .where('tenant', '=', tenant)
    .where('idempotency_key', '=', key)
    .where('created_at', '<', sql<Date>`now() - ${IDEMPOTENCY_WINDOW}`)
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
// the same parse whatever its size, and kysely compiles nothing per batch. Every run-scoped write is fenced on the
// run's generation (`generation = gen`): a run of an older generation (the job was queued again meanwhile) changes
// nothing. The fence rides the statement's own WHERE clause, so it costs no round trip.

/** One run of a job: its ledger id and the generation it was queued as (BullMQ job data `gen`). */
export interface RunRef {
  id: string;
  gen: number;
}

const startRuns = (runs: RunRef[]) => sql<JobRow>`
    update jobs set state = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()), updated_at = now()
    from unnest(${runs.map((r) => r.id)}::uuid[], ${runs.map((r) => r.gen)}::int[]) as v(id, gen)
    where jobs.id = v.id and jobs.generation = v.gen and jobs.state in ('queued', 'delayed', 'running')
      and jobs.cancel_requested = false
    returning jobs.*`;

// A run whose cancel was committed while it ran ends cancelled, not succeeded, whether or not its worker heard the
// cancel message: the ledger's word wins. A finish that finds no start of its run (the row not running: a start
// written behind that never committed, settled from BullMQ's record by the reconciler) counts the run itself.
const finishRuns = (done: (RunRef & { result: unknown })[]) => sql<JobRow>`
    update jobs set state = case when jobs.cancel_requested then 'cancelled' else 'succeeded' end,
      attempts = case when jobs.state = 'running' then jobs.attempts else jobs.attempts + 1 end,
      started_at = coalesce(jobs.started_at, now()),
      progress = case when jobs.cancel_requested then jobs.progress else 100 end,
      result = case when jobs.cancel_requested then null else v.result::jsonb end, error = null,
      finished_at = now(), updated_at = now()
    from unnest(${done.map((d) => d.id)}::uuid[], ${done.map((d) => d.gen)}::int[],
      ${done.map((d) => JSON.stringify(d.result ?? null))}::text[]) as v(id, gen, result)
    where jobs.id = v.id and jobs.generation = v.gen and jobs.state in ('queued', 'delayed', 'running')
    returning jobs.*`;

function inOrder(ids: readonly string[], rows: readonly JobRow[]): (JobRow | undefined)[] {
  const byId = new Map(rows.map((r) => [r.id, r]));
  return ids.map((id) => byId.get(id));
}

/**
 * Called when workers start runs, for many jobs in one statement (the worker's group commit); rows come back in
 * `ids` order. A job that must not run (terminal, cancelled, or unknown to the ledger) comes back undefined.
 */
export async function markRunningMany(db: Q, runs: RunRef[]): Promise<(JobRow | undefined)[]> {
  if (runs.length === 0) return [];
  const { rows } = await startRuns(runs).execute(db);
  return inOrder(
    runs.map((r) => r.id),
    rows,
  );
}

/**
 * Runs that succeeded, many in one statement; rows come back in input order. A row whose cancel was requested ends
 * `cancelled` instead; a run of an older generation comes back undefined.
 */
export async function markSucceededMany(
  db: Q,
  done: (RunRef & { result: unknown })[],
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
  starts: RunRef[],
  done: (RunRef & { result: unknown })[],
): Promise<{ running: (JobRow | undefined)[]; succeeded: (JobRow | undefined)[] }> {
  const starting = new Set(starts.map((r) => r.id));
  if (!starts.length || !done.length || done.some((d) => starting.has(d.id))) {
    return { running: await markRunningMany(db, starts), succeeded: await markSucceededMany(db, done) };
  }
  const ids = starts.map((r) => r.id);
  const { rows } = await sql<JobRow & { op: 'r' | 's' }>`
    with r as (${startRuns(starts)}), s as (${finishRuns(done)})
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

/**
 * A run's progress, fenced on its generation. The row comes back with `cancel_requested`, so the run learns of a
 * committed cancel at its next progress write even if it missed the cancel message; undefined when the row is no
 * longer this run's (queued again, or ended).
 */
export async function setProgress(db: Q, run: RunRef, progress: number): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({ progress, updated_at: sql<Date>`now()` })
    .where('id', '=', run.id)
    .where('generation', '=', run.gen)
    .where('state', '=', 'running')
    .returningAll()
    .executeTakeFirst();
}

/**
 * A failed run, fenced on its generation: `final` ends the job, otherwise it waits (delayed) for its next attempt.
 * With `cancel_requested` set it ends `cancelled` (keeping no error): the client's committed cancel wins over the
 * failure. Undefined when the row is not this run's or not live.
 */
export async function failRun(db: Q, run: RunRef, error: JobError, final: boolean): Promise<JobRow | undefined> {
  const { rows } = await sql<JobRow>`
    update jobs set state = case when cancel_requested then 'cancelled' when ${final} then 'failed' else 'delayed' end,
      error = case when cancel_requested then error else ${JSON.stringify(error)}::jsonb end,
      finished_at = case when cancel_requested or ${final} then now() else null end,
      updated_at = now()
    where id = ${run.id} and generation = ${run.gen} and state in ('queued', 'delayed', 'running')
    returning *`.execute(db);
  return rows[0];
}

/**
 * A run BullMQ failed for good because it stalled too often (its workers died): only while the ledger still shows
 * that very run as running.
 */
export async function markStalled(db: Q, run: RunRef, error: JobError): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({
      state: 'failed',
      error: JSON.stringify(error),
      finished_at: sql<Date>`now()`,
      updated_at: sql<Date>`now()`,
    })
    .where('id', '=', run.id)
    .where('generation', '=', run.gen)
    .where('state', '=', 'running')
    .returningAll()
    .executeTakeFirst();
}

/** Ends a live job cancelled; with `gen`, only if the row is still of that generation (a run-scoped write). */
export async function markCancelled(
  db: Q,
  id: string,
  states: readonly JobState[] = LIVE,
  gen?: number,
): Promise<JobRow | undefined> {
  let q = db
    .updateTable('jobs')
    .set({ state: 'cancelled', finished_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('state', 'in', states);
  if (gen !== undefined) q = q.where('generation', '=', gen);
  return q.returningAll().executeTakeFirst();
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
 * Failed or cancelled jobs that a retry may pick: one by id, or up to `limit` of a type in id order after `after`.
 * The caller removes their finished BullMQ jobs, then resets the ones it could with `resetForRetry`.
 */
export async function retryCandidates(
  db: Q,
  f: { id?: string; type?: string; after?: string; limit: number; states?: JobState[] },
): Promise<JobRow[]> {
  let q = db
    .selectFrom('jobs')
    .selectAll()
    .where('state', 'in', f.states ?? ['failed', 'cancelled']);
  if (f.type) q = q.where('type', '=', f.type);
  if (f.id) q = q.where('id', '=', f.id);
  if (f.after) q = q.where('id', '>', f.after);
  return q.orderBy('id').limit(f.limit).execute();
}

/**
 * failed (or cancelled) → queued again as a new generation, with a fresh set of attempts, for the rows still in
 * `states` and still of the generation the caller saw (a concurrent retry wins once). A `run_at` still in the future
 * is kept (the job is `delayed` until then, as when it was submitted); a past one is cleared. Returns the rows it
 * reset; the caller re-enqueues them.
 */
export async function resetForRetry(
  db: Q,
  rows: readonly { id: string; generation: number }[],
  states: readonly JobState[] = ['failed', 'cancelled'],
): Promise<JobRow[]> {
  if (rows.length === 0) return [];
  const { rows: reset } = await sql<JobRow>`
    update jobs set
      state = case when jobs.run_at > now() then 'delayed' else 'queued' end,
      run_at = case when jobs.run_at > now() then jobs.run_at end,
      generation = jobs.generation + 1,
      progress = 0, attempts = 0, result = null, error = null, cancel_requested = false,
      started_at = null, finished_at = null, updated_at = now()
    from unnest(${rows.map((r) => r.id)}::uuid[], ${rows.map((r) => r.generation)}::int[]) as v(id, gen)
    where jobs.id = v.id and jobs.generation = v.gen and jobs.state = any(${[...states]}::text[])
    returning jobs.*`.execute(db);
  return reset;
}

/**
 * Live jobs the reconciler found missing from Redis (or left there only by an older generation), queued again as a
 * new generation: a run of the old one still going somewhere can no longer write. Only rows still of the generation
 * the reconciler saw, and still live.
 */
export async function requeueLost(db: Q, rows: readonly { id: string; generation: number }[]): Promise<JobRow[]> {
  if (rows.length === 0) return [];
  const { rows: bumped } = await sql<JobRow>`
    update jobs set generation = jobs.generation + 1, updated_at = now()
    from unnest(${rows.map((r) => r.id)}::uuid[], ${rows.map((r) => r.generation)}::int[]) as v(id, gen)
    where jobs.id = v.id and jobs.generation = v.gen and jobs.state in ('queued', 'delayed', 'running')
    returning jobs.*`.execute(db);
  return bumped;
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
