import { sql, type Kysely } from 'kysely';

// Time limits and expiry (issue 19). jobs.timeout_ms: the run time limit the job was submitted with (null: its type's
// default, for jobs submitted before this column or by other jobs). jobs.expires_at: a job not started by then never
// starts. The partial index serves the expiry sweep, which looks only at waiting jobs that have an expiry; nullable
// columns with no default rewrite nothing.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('jobs')
    .addColumn('timeout_ms', 'integer')
    .addColumn('expires_at', 'timestamptz')
    .execute();
  await db.schema
    .createIndex('jobs_expiring_idx')
    .on('jobs')
    .column('expires_at')
    .where(sql.ref('expires_at'), 'is not', null)
    .where(sql.ref('state'), 'in', sql`('queued', 'delayed')`)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('jobs_expiring_idx').execute();
  await db.schema.alterTable('jobs').dropColumn('timeout_ms').dropColumn('expires_at').execute();
}
