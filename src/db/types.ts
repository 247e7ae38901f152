import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { AuditSurface, AuditTargetKind, JobState, Priority, Role, WebhookOutcome } from '../domain.js';

type Json = ColumnType<unknown, string, string>;
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;

interface TenantsTable {
  id: string;
  webhook_secret: string;
  /** Its share of admission against other tenants; null: the configured default (TENANT_WEIGHT). */
  weight: ColumnType<number | null, number | null | undefined, number | null>;
  created_at: Timestamp;
}

/** A tenant's cap on running jobs of one type; a type without a row has the configured default. */
interface TenantLimitsTable {
  tenant: string;
  type: string;
  max_running: number;
}

/** Per (tenant, type): an upper bound of its admitted live jobs; see src/db/admission.ts. */
interface AdmissionWindowsTable {
  tenant: string;
  type: string;
  admitted: Generated<number>;
  granted: Generated<number>;
}

interface ApiKeysTable {
  id: string;
  tenant: string;
  role: Role;
  hash: string;
  created_at: Timestamp;
  revoked_at: NullableTimestamp;
}

interface JobsTable {
  id: string;
  tenant: string;
  type: string;
  state: JobState;
  priority: Priority;
  payload: Json;
  progress: Generated<number>;
  attempts: Generated<number>;
  max_attempts: number;
  result: ColumnType<unknown | null, string | null | undefined, string | null>;
  error: ColumnType<JobError | null, string | null | undefined, string | null>;
  callback_url: string | null;
  idempotency_key: string | null;
  request_hash: string | null;
  /** While this job is live, a submit of its tenant with the same key answers it instead of creating a job. */
  dedupe_key: string | null;
  parent_id: string | null;
  cancel_requested: Generated<boolean>;
  /** The run identity: bumped whenever the job is queued again; every run-scoped write is fenced on it. */
  generation: Generated<number>;
  /** The submitting request's trace context (W3C carrier as JSON), so every run of the job joins its trace. */
  trace_context: ColumnType<string | null, string | null | undefined, string | null>;
  /** The finished_at whose webhook message is settled (delivered, refused or out of tries); see src/webhooks/sweep.ts. */
  webhook_done_for: NullableTimestamp;
  created_at: Timestamp;
  updated_at: Timestamp;
  started_at: NullableTimestamp;
  finished_at: NullableTimestamp;
  run_at: NullableTimestamp;
  /** The run time limit the job was submitted with; null: its type's default (src/jobs/types.ts timeLimits). */
  timeout_ms: ColumnType<number | null, number | null | undefined, number | null>;
  /** A job not started by then never starts: it ends cancelled with error.code "expired". */
  expires_at: NullableTimestamp;
  /** When the job was handed to BullMQ (admission, src/db/admission.ts); null: waiting for its tenant's window. */
  admitted_at: NullableTimestamp;
}

export interface JobError {
  code: string;
  message: string;
}

interface FilesTable {
  id: string;
  tenant: string;
  content_type: string;
  bytes: number;
  sha256: string;
  storage_key: string;
  job_id: string | null;
  name: string | null;
  /** 'operators': only operator and viewer keys may read it (a report across every tenant). */
  visibility: ColumnType<FileVisibility, FileVisibility | undefined, FileVisibility>;
  created_at: Timestamp;
  expires_at: NullableTimestamp;
}

export type FileVisibility = 'tenant' | 'operators';

interface MoviesTable {
  tenant: string;
  id: string;
  title: string;
  genres: ColumnType<string[], string[] | undefined, string[]>;
  year: number | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

interface RatingsTable {
  tenant: string;
  user_id: string;
  movie_id: string;
  /** 0.5..5 */
  rating: number;
  updated_at: Timestamp;
}

/** Bumped by every write to a tenant's movies or ratings; models remember the version they were trained on. */
interface CatalogVersionsTable {
  tenant: string;
  version: Generated<number>;
  updated_at: Timestamp;
}

export interface RecommendationItem {
  movie_id: string;
  title: string;
  score: number;
}

interface RecommendationsTable {
  tenant: string;
  user_id: string;
  job_id: string | null;
  items: ColumnType<RecommendationItem[], string, string>;
  strategy: string;
  model_version: number | null;
  stale: Generated<boolean>;
  generated_at: Timestamp;
}

interface AuditLogTable {
  id: string;
  at: Timestamp;
  actor_key_id: string | null;
  actor_tenant: string | null;
  actor_role: string | null;
  action: string;
  target_kind: AuditTargetKind;
  target: string;
  detail: ColumnType<unknown | null, string | null | undefined, string | null>;
  /** From where: which surface carried the action out (the key is actor_key_id). */
  surface: ColumnType<AuditSurface | null, AuditSurface | null | undefined, AuditSurface | null>;
  /** The client's network address, when the action came over HTTP. */
  client_addr: ColumnType<string | null, string | null | undefined, string | null>;
}

/** A job's state, attempt or generation change, written by a trigger (migrations/2026-12-01T0400_job_events.ts). */
interface JobEventsTable {
  id: Generated<number>;
  job_id: string;
  at: Timestamp;
  generation: number;
  attempt: number;
  from_state: JobState;
  to_state: JobState;
  /** host:pid of the process whose write made the change (its connection's application_name). */
  process: string | null;
  error: ColumnType<JobError | null, string | null | undefined, string | null>;
}

/** A line a processor kept with its job (ctx.jobLog); see src/db/job-logs.ts. */
interface JobLogsTable {
  id: Generated<number>;
  job_id: string;
  generation: number;
  at: Timestamp;
  message: string;
  fields: ColumnType<Record<string, unknown> | null, string | null, string | null>;
  bytes: number;
  truncated: Generated<boolean>;
}

interface SchedulesTable {
  name: string;
  tenant: string;
  type: string;
  payload: Json;
  priority: Priority;
  cron: string | null;
  every_ms: number | null;
  tz: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** The email ledger: one row per (job, recipient); see migrations/2026-11-22T0400_email.ts. */
export type EmailDeliveryState = 'pending' | 'deferred' | 'sent' | 'rejected';
interface EmailDeliveriesTable {
  job_id: string;
  recipient: string;
  state: EmailDeliveryState;
  message_id: string;
  attempts: Generated<number>;
  response: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  sent_at: NullableTimestamp;
  /** The claim's owner: the run (generation, attempt) that claimed it, and when that run last showed it was alive. */
  owner_gen: Generated<number>;
  owner_attempt: Generated<number>;
  owner_seen_at: Timestamp;
}

interface WebhookDeliveriesTable {
  id: Generated<number>;
  job_id: string;
  tenant: string;
  message_id: string;
  event: string;
  url: string;
  attempt: number;
  outcome: WebhookOutcome;
  status_code: number | null;
  error: string | null;
  duration_ms: number;
  created_at: Timestamp;
}

/** One interface per table; a migration that adds a table adds its interface here. */
export interface Database {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  jobs: JobsTable;
  files: FilesTable;
  email_deliveries: EmailDeliveriesTable;
  movies: MoviesTable;
  ratings: RatingsTable;
  catalog_versions: CatalogVersionsTable;
  recommendations: RecommendationsTable;
  audit_log: AuditLogTable;
  schedules: SchedulesTable;
  webhook_deliveries: WebhookDeliveriesTable;
  job_events: JobEventsTable;
  job_logs: JobLogsTable;
  tenant_limits: TenantLimitsTable;
  admission_windows: AdmissionWindowsTable;
}

export type JobRow = Selectable<JobsTable>;
export type NewJobRow = Insertable<JobsTable>;
export type FileRow = Selectable<FilesTable>;
export type NewFileRow = Insertable<FilesTable>;
export type RecommendationRow = Selectable<RecommendationsTable>;
export type AuditRow = Selectable<AuditLogTable>;
export type ScheduleRow = Selectable<SchedulesTable>;
export type EmailDeliveryRow = Selectable<EmailDeliveriesTable>;
export type WebhookDeliveryRow = Selectable<WebhookDeliveriesTable>;
export type NewWebhookDeliveryRow = Insertable<WebhookDeliveriesTable>;
export type JobEventRow = Selectable<JobEventsTable>;
