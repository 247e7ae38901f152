// A job's timeline: every state, attempt and generation change (job_events, written by a trigger on jobs), and the
// attempts they make up: when each started, on which process, how long it waited and ran, how it ended.
import type { Kysely, Transaction } from 'kysely';
import type { JobState } from '../domain.js';
import type { Database, JobError, JobEventRow, JobRow } from './types.js';

type Q = Kysely<Database> | Transaction<Database>;

interface TimelineEvent {
  at: string;
  generation: number;
  attempt: number;
  from: JobState;
  to: JobState;
  /** host:pid of the process whose write made the change; for a start, the worker that took the run. */
  process: string | null;
  error: JobError | null;
}

interface TimelineAttempt {
  generation: number;
  attempt: number;
  /** host:pid of the worker that ran it. */
  process: string | null;
  started_at: string;
  /** null while it runs. */
  ended_at: string | null;
  /** From the job's creation, or the change that last queued it (a retry, a backoff), to this start. */
  wait_ms: number;
  run_ms: number | null;
  /** The state the attempt left the job in ('delayed': failed and waiting for its next attempt); null while running. */
  outcome: JobState | null;
  error: JobError | null;
}

export interface Timeline {
  job_id: string;
  created_at: string;
  events: TimelineEvent[];
  attempts: TimelineAttempt[];
}

/** A job's timeline, any tenant (the caller checks whose the job is); undefined for an unknown job. */
export async function jobTimeline(db: Q, jobId: string): Promise<Timeline | undefined> {
  const job = await db.selectFrom('jobs').select(['id', 'created_at']).where('id', '=', jobId).executeTakeFirst();
  if (!job) return undefined;
  const rows = await db
    .selectFrom('job_events')
    .selectAll()
    .where('job_id', '=', jobId)
    .orderBy('id')
    .limit(10_000)
    .execute();
  return buildTimeline(job, rows);
}

function buildTimeline(job: Pick<JobRow, 'id' | 'created_at'>, rows: JobEventRow[]): Timeline {
  const events: TimelineEvent[] = rows.map((r) => ({
    at: r.at.toISOString(),
    generation: r.generation,
    attempt: r.attempt,
    from: r.from_state,
    to: r.to_state,
    process: r.process,
    error: r.error ?? null,
  }));
  const attempts: TimelineAttempt[] = [];
  let readySince = job.created_at.getTime();
  let open: TimelineAttempt | undefined;
  let lastAttempt = 0;
  for (const r of rows) {
    const at = r.at.getTime();
    if (open && (r.to_state !== 'running' || r.generation !== open.generation || r.attempt !== open.attempt)) {
      open.ended_at = r.at.toISOString();
      open.run_ms = at - Date.parse(open.started_at);
      open.outcome = r.to_state;
      open.error = r.to_state === 'succeeded' ? null : (r.error ?? null);
      open = undefined;
    }
    // A start: into running, or running again under a new attempt number (a run that stalled and was taken over).
    if (r.to_state === 'running' && (r.from_state !== 'running' || r.attempt !== lastAttempt)) {
      open = {
        generation: r.generation,
        attempt: r.attempt,
        process: r.process,
        started_at: r.at.toISOString(),
        ended_at: null,
        wait_ms: Math.max(0, at - readySince),
        run_ms: null,
        outcome: null,
        error: null,
      };
      attempts.push(open);
    }
    if (r.to_state === 'queued' || r.to_state === 'delayed') readySince = at;
    lastAttempt = r.attempt;
  }
  return { job_id: job.id, created_at: job.created_at.toISOString(), events, attempts };
}
