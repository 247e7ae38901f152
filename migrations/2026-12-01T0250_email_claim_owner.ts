import { type Kysely, sql } from 'kysely';

// An email claim's owner: the run (job, generation, attempt) that claimed the recipient, and when that run last showed
// it was alive (claimed, or renewed the claim while its send was under way). Another run may take a pending claim over
// only when its owner is older and has shown no sign of life for a lease, so a live run's send is never repeated
// because its BullMQ lock lapsed. Outcomes are written only by the claim's owner.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('email_deliveries')
    .addColumn('owner_gen', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('owner_attempt', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('owner_seen_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  // Rows claimed before this column existed: their last sign of life is their last change.
  await sql`update email_deliveries set owner_seen_at = updated_at`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('email_deliveries')
    .dropColumn('owner_gen')
    .dropColumn('owner_attempt')
    .dropColumn('owner_seen_at')
    .execute();
}
