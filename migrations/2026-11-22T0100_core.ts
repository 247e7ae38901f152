import { type Kysely, sql } from 'kysely';

// Tenants, their API keys and the jobs ledger: the spine every other table hangs on.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('tenants')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('webhook_secret', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('api_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('tenant', 'text', (c) => c.notNull().references('tenants.id').onDelete('cascade'))
    .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('client', 'operator')`))
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('revoked_at', 'timestamptz')
    .execute();

  await db.schema
    .createTable('jobs')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('tenant', 'text', (c) => c.notNull().references('tenants.id').onDelete('cascade'))
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) =>
      c.notNull().check(sql`state in ('queued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled')`),
    )
    .addColumn('priority', 'text', (c) => c.notNull().check(sql`priority in ('high', 'normal', 'low')`))
    .addColumn('payload', 'jsonb', (c) => c.notNull())
    .addColumn('progress', 'smallint', (c) => c.notNull().defaultTo(0))
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('result', 'jsonb')
    .addColumn('error', 'jsonb')
    .addColumn('callback_url', 'text')
    .addColumn('idempotency_key', 'text')
    .addColumn('request_hash', 'text')
    .addColumn('parent_id', 'uuid', (c) => c.references('jobs.id').onDelete('set null'))
    .addColumn('cancel_requested', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('started_at', 'timestamptz')
    .addColumn('finished_at', 'timestamptz')
    .addColumn('run_at', 'timestamptz')
    .execute();

  // Listing: a tenant's jobs newest first (ids are UUIDv7, so id order is time order).
  await db.schema.createIndex('jobs_tenant_id_idx').on('jobs').columns(['tenant', 'id desc']).execute();
  await db.schema
    .createIndex('jobs_tenant_type_state_idx')
    .on('jobs')
    .columns(['tenant', 'type', 'state', 'id desc'])
    .execute();
  await db.schema
    .createIndex('jobs_parent_idx')
    .on('jobs')
    .column('parent_id')
    .where('parent_id', 'is not', null)
    .execute();
  // The reconciler's scan: only the jobs that should be in Redis.
  await db.schema
    .createIndex('jobs_live_idx')
    .on('jobs')
    .columns(['updated_at', 'id'])
    .where(sql.ref('state'), 'in', sql`('queued', 'delayed', 'running')`)
    .execute();
  await db.schema
    .createIndex('jobs_idempotency_idx')
    .on('jobs')
    .columns(['tenant', 'idempotency_key'])
    .unique()
    .where('idempotency_key', 'is not', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('jobs').execute();
  await db.schema.dropTable('api_keys').execute();
  await db.schema.dropTable('tenants').execute();
}
