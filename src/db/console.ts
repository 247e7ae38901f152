// What the console shows beside single jobs: the overview's figures per type, tenants' load, schedules' last runs,
// and a job's neighbours (children, webhook tries, email recipients). Read-only; `tenant` narrows to one tenant.
import { sql, type Kysely, type Transaction } from 'kysely';
import { LIVE } from '../domain.js';
import type { Database, EmailDeliveryRow, JobRow, WebhookDeliveryRow } from './types.js';

type Q = Kysely<Database> | Transaction<Database>;

export interface TypeStats {
  type: string;
  succeeded: number;
  failed: number;
  /** Seconds from ready (created, or run_at when delayed) to first start. */
  wait_p50: number | null;
  wait_p95: number | null;
  /** Seconds from first start to the end. */
  run_p95: number | null;
}

export interface MinutePoint {
  type: string;
  /** Minutes before now, 0 = this minute. */
  ago: number;
  succeeded: number;
  failed: number;
}

const tenantFilter = (tenant: string | undefined) => (tenant === undefined ? sql`true` : sql`tenant = ${tenant}`);

/** Per type, jobs that finished in the last `minutes`: counts and latency percentiles. */
export async function typeStats(db: Q, minutes: number, tenant?: string): Promise<TypeStats[]> {
  const { rows } = await sql<TypeStats>`
    select type,
      count(*) filter (where state = 'succeeded')::int as succeeded,
      count(*) filter (where state = 'failed')::int as failed,
      percentile_cont(0.5) within group (order by extract(epoch from started_at - coalesce(run_at, created_at))) as wait_p50,
      percentile_cont(0.95) within group (order by extract(epoch from started_at - coalesce(run_at, created_at))) as wait_p95,
      percentile_cont(0.95) within group (order by extract(epoch from finished_at - started_at)) as run_p95
    from jobs
    where finished_at is not null and finished_at >= now() - make_interval(mins => ${minutes})
      and state in ('succeeded', 'failed') and ${tenantFilter(tenant)}
    group by type order by type`.execute(db);
  return rows;
}

/** Per type and minute of the last `minutes`, succeeded and failed jobs (minutes with none are left out). */
export async function perMinute(db: Q, minutes: number, tenant?: string): Promise<MinutePoint[]> {
  const { rows } = await sql<MinutePoint>`
    select type,
      floor(extract(epoch from date_trunc('minute', now()) - date_trunc('minute', finished_at)) / 60)::int as ago,
      count(*) filter (where state = 'succeeded')::int as succeeded,
      count(*) filter (where state = 'failed')::int as failed
    from jobs
    where finished_at is not null and finished_at >= date_trunc('minute', now()) - make_interval(mins => ${minutes - 1})
      and state in ('succeeded', 'failed') and ${tenantFilter(tenant)}
    group by 1, 2 order by 1, 2`.execute(db);
  return rows;
}

/** Per type, jobs waiting to run now (queued or delayed) and running. */
export async function backlog(db: Q, tenant?: string): Promise<{ type: string; waiting: number; running: number }[]> {
  const { rows } = await sql<{ type: string; waiting: number; running: number }>`
    select type,
      count(*) filter (where state in ('queued', 'delayed'))::int as waiting,
      count(*) filter (where state = 'running')::int as running
    from jobs where state in (${sql.join([...LIVE])}) and ${tenantFilter(tenant)}
    group by type order by type`.execute(db);
  return rows;
}

export interface TenantLoad {
  tenant: string;
  live: number;
  failed_24h: number;
}

/** Every tenant with its live jobs and its failures of the last 24 hours. */
export async function tenantLoads(db: Q): Promise<TenantLoad[]> {
  const { rows } = await sql<TenantLoad>`
    select t.id as tenant,
      (select count(*) from jobs j where j.tenant = t.id and j.state in (${sql.join([...LIVE])}))::int as live,
      (select count(*) from jobs j where j.tenant = t.id and j.state = 'failed'
        and j.finished_at >= now() - interval '24 hours')::int as failed_24h
    from tenants t order by t.id`.execute(db);
  return rows;
}

export interface ScheduledRun {
  id: string;
  state: JobRow['state'];
  /** When the tick was due (from its idempotency key). */
  due: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

/**
 * The last runs of a schedule: the jobs its ticks submitted, whose idempotency key is `schedule:repeat:<name>:<ms>`
 * (src/schedules/index.ts), newest first.
 */
export async function scheduleRuns(db: Q, tenant: string, name: string, limit: number): Promise<ScheduledRun[]> {
  const prefix = `schedule:repeat:${name}:`;
  const rows = await db
    .selectFrom('jobs')
    .select(['id', 'state', 'idempotency_key', 'created_at', 'started_at', 'finished_at'])
    .where('tenant', '=', tenant)
    .where('idempotency_key', '>=', prefix)
    .where('idempotency_key', '<', `${prefix}\u{10ffff}`)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  return rows.map((r) => {
    const ms = Number(r.idempotency_key!.slice(prefix.length));
    return {
      id: r.id,
      state: r.state,
      due: Number.isFinite(ms) ? new Date(ms) : r.created_at,
      started_at: r.started_at,
      finished_at: r.finished_at,
    };
  });
}

/** A job's children (jobs submitted with it as parent), oldest first. */
export async function jobChildren(db: Q, id: string, limit = 100): Promise<JobRow[]> {
  return db.selectFrom('jobs').selectAll().where('parent_id', '=', id).orderBy('id').limit(limit).execute();
}

export async function webhookTries(db: Q, jobId: string): Promise<WebhookDeliveryRow[]> {
  return db.selectFrom('webhook_deliveries').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
}

export async function emailRecipients(db: Q, jobId: string): Promise<EmailDeliveryRow[]> {
  return db.selectFrom('email_deliveries').selectAll().where('job_id', '=', jobId).orderBy('recipient').execute();
}
