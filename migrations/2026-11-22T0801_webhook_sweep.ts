import { type Kysely, sql } from 'kysely';

// The webhook sweep looks for recently ended jobs with a callback and no delivery: only those rows are indexed.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex('jobs_callback_finished_idx')
    .on('jobs')
    .column('finished_at')
    .where(sql.ref('callback_url'), 'is not', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('jobs_callback_finished_idx').execute();
}
