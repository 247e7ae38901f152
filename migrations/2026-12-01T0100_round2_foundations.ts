import { type Kysely, sql } from 'kysely';

// Round 2's shared foundations.
// - jobs.generation: the run identity. One monotonic number per job, bumped whenever the job is queued again
//   (retry, reconciler re-enqueue, timeout abandon). Every run-scoped ledger write is fenced on it, so a late write
//   of an older run can never overwrite a newer one. BullMQ job data carries it as `gen`.
// - api_keys.role gains 'viewer': reads what operators read, changes nothing.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('jobs')
    .addColumn('generation', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await sql`alter table api_keys drop constraint if exists api_keys_role_check`.execute(db);
  await sql`alter table api_keys add constraint api_keys_role_check check (role in ('client', 'operator', 'viewer'))`.execute(
    db,
  );
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table api_keys drop constraint if exists api_keys_role_check`.execute(db);
  await sql`alter table api_keys add constraint api_keys_role_check check (role in ('client', 'operator'))`.execute(db);
  await db.schema.alterTable('jobs').dropColumn('generation').execute();
}
