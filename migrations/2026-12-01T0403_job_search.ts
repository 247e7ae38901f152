import { type Kysely, sql } from 'kysely';

// Search inside jobs (GET /v1/jobs?q=, the console's search box): a trigram GIN index over the text of payload,
// result and error, so `ilike '%term%'` for an email address, a user id or a file id is an index scan. An expression
// index rather than a stored column: no second copy of the payload in the heap. Its write cost (every non-HOT update
// of a job adds entries, through GIN's pending list) is measured in docs/performance.md. The expression must match
// SEARCH_TEXT in src/db/search.ts exactly, or the planner will not use the index.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create extension if not exists pg_trgm`.execute(db);
  await sql`
    create index jobs_search_trgm on jobs using gin (
      (coalesce(payload::text, '') || ' ' || coalesce(result::text, '') || ' ' || coalesce(error::text, '')) gin_trgm_ops
    )`.execute(db);
  // Filters that may come alone, newest first.
  await sql`create index jobs_error_code_idx on jobs ((error->>'code'), id) where error is not null`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists jobs_error_code_idx`.execute(db);
  await sql`drop index if exists jobs_search_trgm`.execute(db);
}
