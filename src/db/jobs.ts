// The jobs ledger: every state change of every accepted job goes through these functions.
import { sql, type Kysely, type Transaction } from 'kysely';
import { type JobState, LIVE, TERMINAL } from '../domain.js';
import type { Database, JobError, JobRow, NewJobRow } from './types.js';
import type { ApiJob } from '../jobs/api-job.js';
import { type AdmissionPolicy, type AdmittedRow, insertAndAdmit } from './admission.js';

type Q = Kysely<Database> | Transaction<Database>;

// The state sets the functions below take, under the ledger's name too (ledger.LIVE); defined in src/domain.ts.
export { LIVE, TERMINAL };

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
    timeout_ms: row.timeout_ms ?? null,
    expires_at: iso(row.expires_at ?? null),
    tenant: row.tenant,
  };
  if (row.callback_url) job.callback_url = row.callback_url;
  if (row.parent_id) job.parent_id = row.parent_id;
  if (row.dedupe_key) job.dedupe_key = row.dedupe_key;
  if (row.cancel_requested && !TERMINAL.includes(row.state)) job.cancel_requested = true;
  return job;
}

/**
 * Inserts the rows; they come back in input order. With an admission policy that is on, only the rows their tenants'
 * windows have room for come back admitted (`admitted_at` set); see src/db/admission.ts, which holds the statement.
 *
 * Dedup while live: a row whose `dedupe_key` names a live (queued, delayed or running) job of its tenant is not
 * inserted, and that job comes back in its place, so its id differs from the row's (see `dedupeHits`). The partial
 * unique index jobs_dedupe_live_idx is the arbiter: a concurrent insert of the same key, from this batch or another
 * process, waits for the other to commit and then skips, so exactly one job is created.
 */
export async function insertJobs(db: Q, rows: NewJobRow[], policy?: AdmissionPolicy): Promise<AdmittedRow[]> {
  const inserted = await insertAndAdmit(db, rows, policy);
  if (inserted.every((r) => r !== undefined)) return inserted as AdmittedRow[];
  const skipped = rows.filter((_, i) => !inserted[i]);
  const holders = await dedupeHolders(db, skipped);
  const orphans = skipped.filter((r) => !holders.has(dedupeSlot(r)));
  if (orphans.length) {
    // The job that held the key is gone (only a deleted tenant's can be): try those rows again.
    const again = await insertJobs(db, orphans, policy);
    orphans.forEach((r, i) => holders.set(dedupeSlot(r), again[i]));
  }
  return rows.map((r, i) => inserted[i] ?? (holders.get(dedupeSlot(r)) as AdmittedRow));
}

const dedupeSlot = (r: { tenant: string; dedupe_key?: string | null }) => `${r.tenant}\0${r.dedupe_key}`;

/**
 * For rows the insert skipped, the job holding each (tenant, dedupe_key): the live one, or, if it ended between the
 * insert's conflict and this read, the newest with that key (it was live when this submit met it, so answering it is
 * what the submit would have answered a moment earlier). A separate statement: the insert's snapshot could not see a
 * holder committed by another process while the insert waited for it.
 */
async function dedupeHolders(db: Q, rows: NewJobRow[]): Promise<Map<string, JobRow>> {
  const { rows: found } = await sql<JobRow>`
    select j.* from unnest(${rows.map((r) => r.tenant)}::text[], ${rows.map((r) => r.dedupe_key ?? null)}::text[]) as v(tenant, key)
    cross join lateral (
      (select * from jobs where tenant = v.tenant and dedupe_key = v.key and state in ('queued', 'delayed', 'running'))
      union all
      (select * from jobs where tenant = v.tenant and dedupe_key = v.key order by id desc limit 1)
      limit 1
    ) j`.execute(db);
  return new Map(found.map((r) => [dedupeSlot(r), r]));
}

/** Which of `rows` (the input of insertJobs) were answered by an existing live job instead of being inserted. */
export function dedupeHits(rows: readonly { id: string }[], answered: readonly JobRow[]): boolean[] {
  return rows.map((r, i) => answered[i].id !== r.id);
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

/** Live jobs of a tenant, counted up to `cap + 1` (the partial index jobs_tenant_live_idx keeps this cheap). */
export async function jobsInFlight(db: Q, tenant: string, cap: number): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from (
      select 1 from jobs where tenant = ${tenant} and state in (${sql.join([...LIVE])}) limit ${cap + 1}
    ) live`.execute(db);
  return rows[0].n; // count(*) always answers one row
}

/** A parent's children (a recommendation batch's chunks), of the parent's tenant; `states` narrows them. */
export async function childrenOf(
  db: Q,
  parentId: string,
  tenant: string,
  states?: readonly JobState[],
): Promise<JobRow[]> {
  let q = db.selectFrom('jobs').selectAll().where('parent_id', '=', parentId).where('tenant', '=', tenant);
  if (states) q = q.where('state', 'in', states);
  return q.execute();
}

/**
 * Waiting jobs → cancelled, for one job or a whole type (the dashboard's clean, empty, obliterate). Nothing runs
 * them, so no run is fenced: the state filter is the guard.
 */
export async function cancelWaitingJobs(
  db: Q,
  type: string,
  states: readonly JobState[],
  id?: string,
): Promise<JobRow[]> {
  let q = db
    .updateTable('jobs')
    .set({ state: 'cancelled', finished_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
    .where('type', '=', type)
    .where('state', 'in', states);
  if (id) q = q.where('id', '=', id);
  return q.returningAll().execute();
}

/**
 * Marks the job's current message as settled (webhook_done_for = its finished_at): the sweep (src/webhooks/sweep.ts)
 * stops looking at it. Only the message still current is marked: a job that was retried and ended again since
 * has a new finished_at, and its new message stays pending.
 */
export async function settleWebhookMessage(db: Q, row: JobRow): Promise<void> {
  await db
    .updateTable('jobs')
    .set({ webhook_done_for: sql<Date>`finished_at` })
    .where('id', '=', row.id)
    .where('state', '=', row.state)
    .where(sql<Date>`date_trunc('milliseconds', finished_at)`, '=', row.finished_at)
    .execute();
}

// The worker's hot path: fixed statement text (arrays, not one placeholder per id), so each batch costs PostgreSQL
// the same parse whatever its size, and kysely compiles nothing per batch. Every run-scoped write is fenced on the
// run's generation (`generation = gen`): a run of an older generation (the job was queued again meanwhile) changes
// nothing. The fence rides the statement's own WHERE clause, so it costs no round trip.

/** One run of a job: its ledger id and the generation it was queued as (BullMQ job data `gen`). */
export interface RunRef {
  id: string;
  gen: number;
  /**
   * The row's `attempts` as this run's start left it, where known. Runs of one generation follow each other (BullMQ
   * retries, or a run whose lock lapsed and the run it was handed to); each start counts one, so a newer run's start
   * makes an older run's attempt stale (failRun).
   */
  attempt?: number;
}

/** The error of a job that was not started by its expires_at. */
const EXPIRED: JobError = { code: 'expired', message: 'not started by its expires_at; it will not run' };

// A job never started whose expires_at has passed is not started: it ends cancelled with error.code "expired", in the
// same statement (and under the same fence) as the starts of the others. The runtime sees its state and does not run it.
// Every SET expression reads the row as it was, so this is the same test in each.
const expired = sql`(jobs.started_at is null and jobs.expires_at <= now())`;
const startRuns = (runs: RunRef[]) => sql<JobRow>`
    update jobs set
      state = case when ${expired} then 'cancelled' else 'running' end,
      attempts = case when ${expired} then attempts else attempts + 1 end,
      started_at = case when ${expired} then null else coalesce(started_at, now()) end,
      error = case when ${expired} then ${JSON.stringify(EXPIRED)}::jsonb else error end,
      finished_at = case when ${expired} then now() else finished_at end,
      updated_at = now()
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
 * A failed run, fenced on its generation and, when given, its attempt: a run whose lock lapsed without its worker
 * hearing of it must not set back the row of the run BullMQ handed the job to (that run then stopped as superseded
 * and the job ended failed). `final` ends the job, otherwise it waits (delayed) for its next attempt.
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
      ${run.attempt === undefined ? sql`` : sql`and attempts = ${run.attempt}`}
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
 * reset; the caller re-enqueues those `admitted` (false: they wait for admission, as a new job would).
 */
export async function resetForRetry(
  db: Q,
  rows: readonly { id: string; generation: number }[],
  states: readonly JobState[] = ['failed', 'cancelled'],
  admitted = true,
): Promise<JobRow[]> {
  if (rows.length === 0) return [];
  const { rows: reset } = await sql<JobRow>`
    update jobs set
      state = case when jobs.run_at > now() then 'delayed' else 'queued' end,
      run_at = case when jobs.run_at > now() then jobs.run_at end,
      expires_at = case when jobs.expires_at > now() then jobs.expires_at end,
      generation = jobs.generation + 1,
      progress = 0, attempts = 0, result = null, error = null, cancel_requested = false,
      started_at = null, finished_at = null, updated_at = now(), admitted_at = case when ${admitted} then now() end
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
 * Up to `limit` jobs never started whose expires_at has passed, ended cancelled with error.code "expired" (the expiry
 * sweep; a worker that starts one first settles it the same way, see startRuns). Rows another sweep holds are skipped,
 * and a row a worker started meanwhile is no longer queued or delayed, so each ends once.
 */
export async function expireOverdue(db: Q, limit: number): Promise<JobRow[]> {
  const { rows } = await sql<JobRow>`
    update jobs set state = 'cancelled', error = ${JSON.stringify(EXPIRED)}::jsonb, finished_at = now(), updated_at = now()
    where id in (
      select id from jobs
      where expires_at <= now() and state in ('queued', 'delayed') and started_at is null
      order by expires_at limit ${limit}
      for update skip locked)
    and state in ('queued', 'delayed') and started_at is null
    returning *`.execute(db);
  return rows;
}

/**
 * Jobs that should be in Redis (live and admitted: the rest wait for the admitter), last changed in [since, until), in id order after `after`. `since` absent: all of
 * them (a full scan).
 */
export async function liveJobsChangedBetween(
  db: Q,
  until: Date,
  since: Date | undefined,
  after: string | undefined,
  limit: number,
): Promise<JobRow[]> {
  let q = db
    .selectFrom('jobs')
    .selectAll()
    .where('state', 'in', LIVE)
    .where('admitted_at', 'is not', null)
    .where('updated_at', '<', until);
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
