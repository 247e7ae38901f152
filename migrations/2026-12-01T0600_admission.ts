import { type Kysely, sql } from 'kysely';

// Fairness: admission from the ledger into BullMQ (see src/db/admission.ts).
// - jobs.admitted_at: set when the job is handed to BullMQ. Only admitted jobs are in Redis; the reconciler
//   re-enqueues only those. Every job live today is already in BullMQ, so it counts as admitted.
// - tenant_limits: a tenant's cap on running jobs of one type (absent: the configured default).
// - tenants.weight: its share against other tenants (absent: the configured default).
// - admission_windows: per (tenant, type), an upper bound of its admitted live jobs. Submits raise it in the same
//   statement that admits rows (a row lock, so API processes cannot overshoot a cap); the admitter, holding the same
//   row lock, sets it back to the ledger's true count before admitting more.
// - audit_log.target_kind gains 'tenant' (limit changes are audited).
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('admitted_at', 'timestamptz').execute();
  await sql`update jobs set admitted_at = coalesce(started_at, created_at) where state in ('queued', 'delayed', 'running')`.execute(
    db,
  );
  // The admitter's pick: a tenant's waiting jobs of a type, priority then age.
  await sql`create index jobs_unadmitted_idx on jobs (type, tenant, (array_position(array['high', 'normal', 'low'], priority)), id)
    where admitted_at is null and state in ('queued', 'delayed')`.execute(db);
  // A tenant's admitted live jobs of a type (its window's use).
  await sql`create index jobs_admitted_live_idx on jobs (tenant, type)
    where admitted_at is not null and state in ('queued', 'delayed', 'running')`.execute(db);
  await db.schema
    .createTable('tenant_limits')
    .addColumn('tenant', 'text', (c) => c.notNull().references('tenants.id').onDelete('cascade'))
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('max_running', 'integer', (c) => c.notNull().check(sql`max_running >= 0`))
    .addPrimaryKeyConstraint('tenant_limits_pkey', ['tenant', 'type'])
    .execute();
  await db.schema
    .alterTable('tenants')
    .addColumn('weight', 'double precision', (c) => c.check(sql`weight > 0`))
    .execute();
  await db.schema
    .createTable('admission_windows')
    .addColumn('tenant', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('admitted', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('granted', 'integer', (c) => c.notNull().defaultTo(0))
    .addPrimaryKeyConstraint('admission_windows_pkey', ['tenant', 'type'])
    .execute();
  await sql`alter table audit_log drop constraint if exists audit_log_target_kind_check`.execute(db);
  await sql`alter table audit_log add constraint audit_log_target_kind_check
    check (target_kind in ('queue', 'job', 'schedule', 'dashboard', 'tenant'))`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table audit_log drop constraint if exists audit_log_target_kind_check`.execute(db);
  await sql`alter table audit_log add constraint audit_log_target_kind_check
    check (target_kind in ('queue', 'job', 'schedule', 'dashboard'))`.execute(db);
  await db.schema.dropTable('admission_windows').execute();
  await db.schema.alterTable('tenants').dropColumn('weight').execute();
  await db.schema.dropTable('tenant_limits').execute();
  await db.schema.dropIndex('jobs_admitted_live_idx').execute();
  await db.schema.dropIndex('jobs_unadmitted_idx').execute();
  await db.schema.alterTable('jobs').dropColumn('admitted_at').execute();
}
