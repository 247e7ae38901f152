import { type Kysely, sql } from 'kysely';

// Reports filter the ledger by created_at over a period. The ledger is append-mostly in created_at order, so a
// BRIN index (a few pages for millions of rows, next to nothing per insert) skips the blocks outside the period
// without slowing the hot insert path the way a B-tree would.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index jobs_created_brin on jobs using brin (created_at)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('jobs_created_brin').execute();
}
