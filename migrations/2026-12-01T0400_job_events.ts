import { type Kysely, sql } from 'kysely';

// The timeline of a job: one row per state, attempt or generation change, written by a trigger inside the very
// statement that made the change (the worker's batched start and finish, a cancel, a retry), so a run pays no extra
// round trip for it. `process` is the writing connection's application_name, which src/db/index.ts sets to the
// process's host:pid: on a start it names the worker that took the run. `error` is the job's error as the change left it
// (a failed attempt's). The job's creation is not a row: it is the job's own created_at.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table job_events (
      id bigint generated always as identity primary key,
      job_id uuid not null,
      at timestamptz not null default now(),
      generation integer not null,
      attempt integer not null,
      from_state text not null,
      to_state text not null,
      process text,
      error jsonb
    )`.execute(db);
  // No foreign key: retention removes a job's events with it in batches of its own choosing.
  await sql`create index job_events_job_idx on job_events (job_id, id)`.execute(db);
  await sql`
    create function jobs_record_event() returns trigger language plpgsql as $$
    begin
      insert into job_events (job_id, generation, attempt, from_state, to_state, process, error)
      values (new.id, new.generation, new.attempts, old.state, new.state, nullif(current_setting('application_name', true), ''),
        case when new.state in ('delayed', 'failed', 'cancelled') or new.error is distinct from old.error then new.error end);
      return null;
    end $$`.execute(db);
  // UPDATE OF: progress writes (the most frequent) do not set these columns, so the trigger is not even considered.
  await sql`
    create trigger jobs_events_trg after update of state, attempts, generation on jobs
    for each row
    when (old.state is distinct from new.state or old.attempts is distinct from new.attempts
          or old.generation is distinct from new.generation)
    execute function jobs_record_event()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists jobs_events_trg on jobs`.execute(db);
  await sql`drop function if exists jobs_record_event()`.execute(db);
  await sql`drop table if exists job_events`.execute(db);
}
