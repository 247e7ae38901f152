// Admission: which ledger jobs are handed to BullMQ, so one tenant's flood cannot fill the queue ahead of another's.
//
// A tenant's admitted live jobs of a type (admitted_at set, state queued, delayed or running) never exceed its
// window = min(its cap on running jobs of the type, ADMISSION_WINDOW × its weight). So at most a window of one
// tenant's jobs is ever ahead of another's in BullMQ's FIFO, running ≤ cap holds, and under a flood each tenant's
// share of the workers follows its window (its weight).
//
// Serialisation: admission_windows holds, per (tenant, type), an upper bound of the admitted live count. A submit
// raises it in the very statement that inserts and admits its rows (INSERT … ON CONFLICT DO UPDATE locks the row and
// reads its latest version, so two API processes cannot both take the last slot, and the quiet tenant's submit stays
// one statement). Finished jobs do not lower it; the admitter does, holding the same row lock: it counts the ledger's
// true number in a statement of its own (a snapshot taken after the lock, so it sees every submit that raised the
// bound), admits up to the window, and stores the true count plus what it admitted.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Config } from '../config.js';
import type { Database, JobRow, NewJobRow } from './types.js';

/**
 * A row as admission returns it: `admission_rank` is its place in its tenant's window over the tenant's weight.
 * `admission_recheck`: not admitted at submit although its tenant had no jobs of the type waiting, because the
 * window's bound said full; the bound may be stale (jobs ended since), so the submitter calls `admit` for it at once
 * (with `admission_window` and `admission_weight`) rather than leave a quiet tenant's job to the admitter's next pass.
 */
export type AdmittedRow = JobRow & {
  admission_rank?: number | null;
  admission_recheck?: boolean | null;
  admission_window?: number | null;
  admission_weight?: number | null;
};

type Q = Kysely<Database> | Transaction<Database>;

/** The admission settings (from config: ADMISSION, ADMISSION_WINDOW, TENANT_MAX_RUNNING, TENANT_WEIGHT). */
export interface AdmissionPolicy {
  /** Off: every job is admitted at submit, as before fairness (the benchmark's baseline). */
  on: boolean;
  /** A tenant's window per unit of weight. */
  window: number;
  /** The cap on a tenant's running jobs of a type when it has no tenant_limits row. */
  maxRunning: number;
  /** A tenant's weight when it has none of its own. */
  weight: number;
}

export function admissionPolicy(
  config: Pick<Config, 'ADMISSION' | 'ADMISSION_WINDOW' | 'TENANT_MAX_RUNNING' | 'TENANT_WEIGHT'>,
): AdmissionPolicy {
  return {
    on: config.ADMISSION === 'on',
    window: config.ADMISSION_WINDOW,
    maxRunning: config.TENANT_MAX_RUNNING,
    weight: config.TENANT_WEIGHT,
  };
}

/** A tenant's window for a type: min(cap, ⌈window × weight⌉); a cap of 0 admits nothing (the type is paused for it). */
export function windowOf(policy: Pick<AdmissionPolicy, 'window'>, cap: number, weight: number): number {
  return Math.max(0, Math.min(cap, Math.ceil(policy.window * weight)));
}

/** The same arithmetic in SQL, over the tenant's limits row `l` and tenants row `t` (both may be absent). */
const windowSql = (p: AdmissionPolicy) =>
  sql<number>`least(coalesce(l.max_running, ${p.maxRunning}::int), ceil(${p.window}::float8 * coalesce(t.weight, ${p.weight}::float8)))::int`;

/** Within a tenant: priority (high first), then age (the UUIDv7 id). */
const PRIORITY_RANK = sql`array_position(array['high', 'normal', 'low'], priority)`;

const COLUMNS = [
  'id',
  'tenant',
  'type',
  'state',
  'priority',
  'payload',
  'max_attempts',
  'callback_url',
  'idempotency_key',
  'request_hash',
  'parent_id',
  'run_at',
  'trace_context',
  'timeout_ms',
  'expires_at',
  'dedupe_key',
] as const;

/** Dedup while live: the partial unique index jobs_dedupe_live_idx is the arbiter. */
const DEDUPE_CONFLICT = sql`on conflict (tenant, dedupe_key) where state in ('queued', 'delayed', 'running') and dedupe_key is not null do nothing`;

/** Waiting for admission and ready to run: not admitted, live and not yet started, its run_at (if any) reached. */
const READY = sql`admitted_at is null and state in ('queued', 'delayed') and (run_at is null or run_at <= now())`;

/**
 * Inserts the rows (they come back in input order) and admits, in the same statement, those its tenant's window has
 * room for. Without a policy, or with admission off, every row is admitted. A row comes back with `admitted_at` set
 * when it must go to BullMQ now (with `admission_rank`, its BullMQ order: see bullPriority in src/domain.ts); the
 * others wait for the admitter. Fixed statement text over unnest'ed arrays.
 *
 * Only `queued` rows are admitted here: a `delayed` one (run_at ahead) would hold a slot of its tenant's window while
 * it waits, so it is admitted when due. A tenant that already has jobs of the type waiting is not admitted here
 * either: its new job would otherwise overtake older or higher-priority ones; the admitter takes them in order.
 */
export async function insertAndAdmit(
  db: Q,
  rows: NewJobRow[],
  policy?: AdmissionPolicy,
): Promise<(AdmittedRow | undefined)[]> {
  if (rows.length === 0) return [];
  const col = <K extends keyof NewJobRow>(k: K) => rows.map((r) => r[k] ?? null);
  const values = sql`unnest(${col('id')}::uuid[], ${col('tenant')}::text[], ${col('type')}::text[], ${col('state')}::text[],
      ${col('priority')}::text[], ${col('payload')}::jsonb[], ${col('max_attempts')}::int[], ${col('callback_url')}::text[],
      ${col('idempotency_key')}::text[], ${col('request_hash')}::text[], ${col('parent_id')}::uuid[], ${col('run_at')}::timestamptz[],
      ${col('trace_context')}::text[], ${col('timeout_ms')}::int[], ${col('expires_at')}::timestamptz[], ${col('dedupe_key')}::text[])`;
  // Only batches that carry a dedupe_key pay for speculative insertion; without one, no row can meet the arbiter index.
  // A row skipped by it comes back undefined (src/db/jobs.ts insertJobs answers it with the live job). In the admitting
  // statement a skipped row still raised its tenant's window bound: a bound may only be high, and refreshBounds
  // lowers it.
  const onConflict = rows.some((r) => r.dedupe_key) ? DEDUPE_CONFLICT : sql``;
  const columns = sql.raw(COLUMNS.join(', '));
  const fromV = sql.raw(COLUMNS.map((c) => `v.${c}`).join(', '));
  let inserted: AdmittedRow[];
  if (!policy?.on) {
    ({ rows: inserted } = await sql<JobRow>`
      insert into jobs (${columns}, admitted_at)
      select *, now() from ${values}
      ${onConflict}
      returning *`.execute(db));
  } else {
    ({ rows: inserted } = await sql<AdmittedRow>`
      with v as (
        select v.*, row_number() over (partition by v.tenant, v.type, v.state = 'queued'
          order by array_position(array['high', 'normal', 'low'], v.priority), v.ord) as rank
        from ${values} with ordinality as v(${columns}, ord)
      ),
      g as (
        select v.tenant, v.type, count(*)::int as k, min(${windowSql(policy)}) as win,
          min(coalesce(t.weight, ${policy.weight}::float8)) as wt
        from v left join tenant_limits l on l.tenant = v.tenant and l.type = v.type left join tenants t on t.id = v.tenant
        where v.state = 'queued'
          and not exists (select 1 from jobs j where j.type = v.type and j.tenant = v.tenant
            and j.admitted_at is null and j.state in ('queued', 'delayed') and (j.run_at is null or j.run_at <= now()))
        group by v.tenant, v.type
      ),
      w as (
        insert into admission_windows as a (tenant, type, admitted, granted)
        select tenant, type, greatest(0, least(k, win)), greatest(0, least(k, win)) from g order by tenant, type
        on conflict (tenant, type) do update set
          granted = greatest(0, least((select k from g where g.tenant = a.tenant and g.type = a.type),
            (select win from g where g.tenant = a.tenant and g.type = a.type) - a.admitted)),
          admitted = a.admitted + greatest(0, least((select k from g where g.tenant = a.tenant and g.type = a.type),
            (select win from g where g.tenant = a.tenant and g.type = a.type) - a.admitted))
        returning a.tenant, a.type, a.granted, a.admitted
      ),
      ins as (
        insert into jobs (${columns}, admitted_at)
        select ${fromV}, case when v.state = 'queued' and v.rank <= coalesce(w.granted, 0) then now() end
        from v left join w on w.tenant = v.tenant and w.type = v.type
        order by v.ord
        ${onConflict}
        returning *
      )
      select ins.*, case when ins.admitted_at is not null
          then floor((w.admitted - w.granted + v.rank) / g.wt)::int end as admission_rank,
        (ins.admitted_at is null and g.tenant is not null) as admission_recheck,
        g.win as admission_window, g.wt as admission_weight
      from ins join v on v.id = ins.id
        left join w on w.tenant = ins.tenant and w.type = ins.type
        left join g on g.tenant = ins.tenant and g.type = ins.type`.execute(db));
  }
  if (rows.length === 1) return [inserted[0]];
  const byId = new Map(inserted.map((r) => [r.id, r]));
  return rows.map((r) => byId.get(r.id as string));
}

/** A (tenant, type) with jobs waiting for admission, and what its window allows. */
export interface Candidate {
  tenant: string;
  type: string;
  /** Jobs ready and waiting for admission. */
  waiting: number;
  /** Its admitted live jobs, by this statement's snapshot. */
  live: number;
  window: number;
  weight: number;
}

/**
 * Every (tenant, type) with jobs ready and waiting, with its window's use: the admitter's view, one statement. The
 * pairs are found by a skip scan of the waiting-jobs index (one probe per pair, however long a tenant's backlog), and
 * `waiting` counts at most `cap` of a pair's jobs, so a pass costs the same with 5,000 jobs waiting or 500,000.
 */
export async function candidates(db: Q, policy: AdmissionPolicy, cap = 10_000): Promise<Candidate[]> {
  const { rows } = await sql<Candidate>`
    with recursive pairs as (
      (select type, tenant from jobs where admitted_at is null and state in ('queued', 'delayed') order by type, tenant limit 1)
      union all
      select n.type, n.tenant from pairs p cross join lateral (
        select type, tenant from jobs where admitted_at is null and state in ('queued', 'delayed')
          and (type, tenant) > (p.type, p.tenant) order by type, tenant limit 1) n
    ),
    g as (
      select p.tenant, p.type, (select count(*) from (select 1 from jobs where type = p.type and tenant = p.tenant
        and ${READY} limit ${cap}) w)::int as waiting
      from pairs p
    )
    select g.tenant, g.type, g.waiting,
      (select count(*) from jobs j where j.tenant = g.tenant and j.type = g.type and j.admitted_at is not null
        and j.state in ('queued', 'delayed', 'running'))::int as live,
      ${windowSql(policy)} as window, coalesce(t.weight, ${policy.weight}::float8) as weight
    from g
    left join tenant_limits l on l.tenant = g.tenant and l.type = g.type
    left join tenants t on t.id = g.tenant
    where g.waiting > 0
    order by g.type, g.tenant`.execute(db);
  return rows;
}

/**
 * Admits up to `n` of a tenant's ready jobs of a type, priority then age, within its window; returns them (the caller
 * enqueues them after this commits). One transaction holding the (tenant, type) admission_windows row, so a submit
 * cannot admit into the same window meanwhile; SKIP LOCKED leaves rows another transaction is changing (a cancel).
 */
export async function admit(
  db: Kysely<Database>,
  c: Pick<Candidate, 'tenant' | 'type' | 'window' | 'weight'>,
  n: number,
): Promise<AdmittedRow[]> {
  return db.transaction().execute(async (trx) => {
    await sql`insert into admission_windows as a (tenant, type) values (${c.tenant}, ${c.type})
      on conflict (tenant, type) do update set granted = 0`.execute(trx);
    // A statement of its own: its snapshot is taken after the row lock, so it sees every submit that raised the bound.
    const { rows } = await sql<AdmittedRow>`
      with live as (
        select count(*)::int as n from jobs where tenant = ${c.tenant} and type = ${c.type}
          and admitted_at is not null and state in ('queued', 'delayed', 'running')
      ),
      pick as (
        select id from jobs where type = ${c.type} and tenant = ${c.tenant} and ${READY}
        order by ${PRIORITY_RANK}, id
        limit greatest(0, least(${n}::int, ${c.window}::int - (select n from live)))
        for update skip locked
      ),
      admitted as (
        update jobs set admitted_at = now(), updated_at = now() from pick where jobs.id = pick.id returning jobs.*
      ),
      bound as (
        update admission_windows set admitted = (select n from live) + (select count(*) from admitted)
        where tenant = ${c.tenant} and type = ${c.type}
      )
      select *, floor(((select n from live) + row_number() over (order by ${PRIORITY_RANK}, id)) / ${c.weight}::float8)::int
        as admission_rank
      from admitted order by ${PRIORITY_RANK}, id`.execute(trx);
    return rows;
  });
}

/**
 * Sets every window's bound back to its true count of admitted live jobs (finished jobs do not lower a bound, so a
 * quiet tenant's bound creeps up to its window). All bounds above zero are locked first, then counted in a statement
 * of its own, whose snapshot sees every admission that raised them. Returns how many bounds it lowered.
 */
export async function refreshBounds(db: Kysely<Database>): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { rows: locked } = await sql<{ tenant: string; type: string }>`
      select tenant, type from admission_windows where admitted > 0 order by tenant, type for update`.execute(trx);
    if (locked.length === 0) return 0;
    // Only the rows locked above: one raised from 0 since then is not ours to set.
    const { rows } = await sql<{ tenant: string }>`
      update admission_windows a set admitted = c.n
      from unnest(${locked.map((l) => l.tenant)}::text[], ${locked.map((l) => l.type)}::text[]) as w(tenant, type)
      cross join lateral (
        select count(*)::int as n from jobs j where j.tenant = w.tenant and j.type = w.type
          and j.admitted_at is not null and j.state in ('queued', 'delayed', 'running')
      ) c
      where a.tenant = w.tenant and a.type = w.type and a.admitted > c.n
      returning a.tenant`.execute(trx);
    return rows.length;
  });
}

/**
 * Admits, now and within their windows, the ready jobs of the (tenant, type) pairs of `rows` (jobs just queued again
 * by a retry): a quiet tenant's retry goes to BullMQ at once, a mass retry waits for windows like new jobs.
 */
export async function admitNow(
  db: Kysely<Database>,
  policy: AdmissionPolicy,
  rows: readonly { tenant: string; type: string }[],
): Promise<AdmittedRow[]> {
  const pairs = new Map<string, { tenant: string; type: string; n: number }>();
  for (const r of rows) {
    const key = `${r.tenant}/${r.type}`;
    const p = pairs.get(key) ?? { tenant: r.tenant, type: r.type, n: 0 };
    p.n++;
    pairs.set(key, p);
  }
  const admitted: AdmittedRow[] = [];
  for (const p of pairs.values()) {
    const { rows: found } = await sql<{ window: number; weight: number }>`
      select ${windowSql(policy)} as window, coalesce(t.weight, ${policy.weight}::float8) as weight
      from (select ${p.tenant}::text as tenant, ${p.type}::text as type) g
      left join tenant_limits l on l.tenant = g.tenant and l.type = g.type
      left join tenants t on t.id = g.tenant`.execute(db);
    admitted.push(...(await admit(db, { ...p, ...found[0] }, p.n)));
  }
  return admitted;
}

/** A job queued again (retry): it goes through admission like a new one, unless admission is off. */
export const admittedOnRequeue = (policy: AdmissionPolicy | undefined) => !policy?.on;

/** A tenant's own limits: its weight (null: default) and its caps by type. */
export interface TenantLimits {
  weight: number | null;
  max_running: Record<string, number>;
}

export async function getTenantLimits(db: Q, tenant: string): Promise<TenantLimits | undefined> {
  const t = await db.selectFrom('tenants').select('weight').where('id', '=', tenant).executeTakeFirst();
  if (!t) return undefined;
  const caps = await db
    .selectFrom('tenant_limits')
    .select(['type', 'max_running'])
    .where('tenant', '=', tenant)
    .orderBy('type')
    .execute();
  return { weight: t.weight, max_running: Object.fromEntries(caps.map((c) => [c.type, c.max_running])) };
}

/**
 * Changes a tenant's limits: `weight` undefined keeps it, null returns to the default; each cap a number sets it, null
 * removes it (back to the default). Returns the limits after, or undefined for an unknown tenant.
 */
export async function setTenantLimits(
  db: Q,
  tenant: string,
  change: { weight?: number | null; max_running?: Record<string, number | null> },
): Promise<TenantLimits | undefined> {
  if (!(await db.selectFrom('tenants').select('id').where('id', '=', tenant).executeTakeFirst())) return undefined;
  if (change.weight !== undefined)
    await db.updateTable('tenants').set({ weight: change.weight }).where('id', '=', tenant).execute();
  for (const [type, cap] of Object.entries(change.max_running ?? {})) {
    if (cap === null)
      await db.deleteFrom('tenant_limits').where('tenant', '=', tenant).where('type', '=', type).execute();
    else
      await db
        .insertInto('tenant_limits')
        .values({ tenant, type, max_running: cap })
        .onConflict((oc) => oc.columns(['tenant', 'type']).doUpdateSet({ max_running: cap }))
        .execute();
  }
  return getTenantLimits(db, tenant);
}
