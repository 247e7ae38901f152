import { type Kysely, sql } from 'kysely';

// The console's overview reads the jobs that finished in the last hour or day, per type (src/db/console.ts): an
// index on finished_at keeps that a range scan instead of a scan of the whole ledger.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex('jobs_finished_idx')
    .on('jobs')
    .columns(['finished_at', 'type'])
    .where(sql.ref('finished_at'), 'is not', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('jobs_finished_idx').ifExists().execute();
}
