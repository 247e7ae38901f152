import { type Kysely, sql } from 'kysely';

// Dedup while live (POST /v1/jobs `dedupe_key`): at most one live (queued, delayed or running) job per tenant and key.
// The partial unique index is the arbiter of the submit INSERT's `on conflict do nothing`, so concurrent submits from
// any number of API processes create one job; once that job ends its row leaves the index and the key is free.
// The second index finds a key's jobs whatever their state (a submit that lost the race to a job that has just
// ended, and the search filter `dedupe_key=`), newest first.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('dedupe_key', 'text').execute();
  await sql`
    create unique index jobs_dedupe_live_idx on jobs (tenant, dedupe_key)
    where state in ('queued', 'delayed', 'running') and dedupe_key is not null`.execute(db);
  await sql`create index jobs_dedupe_key_idx on jobs (tenant, dedupe_key, id desc) where dedupe_key is not null`.execute(
    db,
  );
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists jobs_dedupe_key_idx`.execute(db);
  await sql`drop index if exists jobs_dedupe_live_idx`.execute(db);
  await db.schema.alterTable('jobs').dropColumn('dedupe_key').execute();
}
