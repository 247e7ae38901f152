import { type Kysely, sql } from 'kysely';

// Retention (src/db/retention.ts): old finished jobs are found through jobs_finished_idx (finished_at, type), which
// 2026-12-01T0450 added; audit entries had no index on their time, so finding the old ones walked the whole table.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index audit_log_at_idx on audit_log (at)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists audit_log_at_idx`.execute(db);
}
