import { type Kysely, sql } from 'kysely';

// Log lines a processor kept with its job (ctx.jobLog). Bounded per job in count and bytes by the statement that
// writes them (src/db/job-logs.ts); `generation` is the run that wrote the line, `truncated` marks the closing line
// that says later lines were dropped.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table job_logs (
      id bigint generated always as identity primary key,
      job_id uuid not null,
      generation integer not null,
      at timestamptz not null,
      message text not null,
      fields jsonb,
      bytes integer not null,
      truncated boolean not null default false
    )`.execute(db);
  await sql`create index job_logs_job_idx on job_logs (job_id, id)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table if exists job_logs`.execute(db);
}
