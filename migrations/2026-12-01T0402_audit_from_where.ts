import { type Kysely, sql } from 'kysely';

// Audit entries say from where an action came: the surface (the API, the console, the Bull Board dashboard, a
// schedule, the CLI) and the client's address when there was one. The key is actor_key_id, already there.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table audit_log add column surface text check (surface in ('api', 'console', 'dashboard', 'schedule', 'cli'))`.execute(
    db,
  );
  await sql`alter table audit_log add column client_addr text`.execute(db);
  // The job page lists the entries about one job.
  await sql`create index audit_log_target_idx on audit_log (target_kind, target, id)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists audit_log_target_idx`.execute(db);
  await sql`alter table audit_log drop column if exists client_addr`.execute(db);
  await sql`alter table audit_log drop column if exists surface`.execute(db);
}
