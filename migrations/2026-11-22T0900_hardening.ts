import { type Kysely, sql } from 'kysely';

// The per-tenant cap on jobs in flight counts a tenant's live jobs on every submission; this index keeps that count
// proportional to the jobs in flight (bounded by the cap), not to the tenant's whole history.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex('jobs_tenant_live_idx')
    .on('jobs')
    .column('tenant')
    .where(sql.ref('state'), 'in', sql`('queued', 'delayed', 'running')`)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('jobs_tenant_live_idx').execute();
}
