import { type Kysely, sql } from 'kysely';

// Who did what to which queue, job or schedule; and the schedule definitions that BullMQ job schedulers fire.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('audit_log')
    // UUIDv7: id order is time order, so the newest-first listing pages on the primary key.
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    // No foreign keys: the record outlives the key or tenant that acted.
    .addColumn('actor_key_id', 'text')
    .addColumn('actor_tenant', 'text')
    .addColumn('actor_role', 'text')
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target_kind', 'text', (c) =>
      c.notNull().check(sql`target_kind in ('queue', 'job', 'schedule', 'dashboard')`),
    )
    .addColumn('target', 'text', (c) => c.notNull())
    .addColumn('detail', 'jsonb')
    .execute();

  await db.schema
    .createTable('schedules')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('tenant', 'text', (c) => c.notNull().references('tenants.id').onDelete('cascade'))
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('payload', 'jsonb', (c) => c.notNull())
    .addColumn('priority', 'text', (c) => c.notNull().check(sql`priority in ('high', 'normal', 'low')`))
    .addColumn('cron', 'text')
    .addColumn('every_ms', 'bigint')
    .addColumn('tz', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint('schedules_one_rule', sql`(cron is null) <> (every_ms is null)`)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('schedules').execute();
  await db.schema.dropTable('audit_log').execute();
}
