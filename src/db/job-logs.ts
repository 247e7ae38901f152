// Log lines processors keep with their jobs (ctx.jobLog). Bounded per job, in lines and in bytes, by the one
// statement that writes them: past either bound a job's later lines are dropped, and a closing line says so.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from './types.js';

type Q = Kysely<Database> | Transaction<Database>;

export interface JobLogLimits {
  /** Lines kept per job, the closing "dropped" line included. */
  lines: number;
  /** Bytes (message plus fields as JSON) kept per job, the closing line included. */
  bytes: number;
}

export const JOB_LOG_LIMITS: JobLogLimits = { lines: 500, bytes: 256 * 1024 };
/** A message longer than this is cut; fields whose JSON is longer are replaced by a note saying so. */
const JOB_LOG_MESSAGE_CHARS = 2000;
const JOB_LOG_FIELDS_CHARS = 4000;

export interface JobLogLine {
  job_id: string;
  /** The run's generation: a line of a run that is no longer the job's current one is not kept. */
  gen: number;
  at: Date;
  message: string;
  fields?: Record<string, unknown>;
}

export interface ApiJobLogLine {
  at: string;
  generation: number;
  message: string;
  fields: Record<string, unknown> | null;
}

/** The text PostgreSQL will store: no NUL (text refuses it), at most `max` characters. */
function storable(s: string, max: number): string {
  return (s.length > max ? `${s.slice(0, max - 1)}…` : s).replaceAll('\u0000', '\uFFFD');
}

function fieldsJson(fields: Record<string, unknown> | undefined): string | null {
  if (fields === undefined) return null;
  let json: string;
  try {
    json = JSON.stringify(fields, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) ?? 'null';
  } catch (err) {
    json = JSON.stringify({ fields_unserializable: String((err as Error).message) });
  }
  if (json.length > JOB_LOG_FIELDS_CHARS) json = JSON.stringify({ fields_dropped: `${json.length} characters` });
  // jsonb refuses \u0000 escapes.
  return json.replaceAll('\\u0000', '\\ufffd');
}

/**
 * Writes lines of any number of jobs in one statement; returns how many were kept. Lines of a run whose generation
 * is not the job's current one are not kept (fenced like every run-scoped write).
 */
export async function appendJobLogs(
  db: Q,
  lines: JobLogLine[],
  limits: JobLogLimits = JOB_LOG_LIMITS,
): Promise<number> {
  if (lines.length === 0) return 0;
  const note = `job log limit reached (${limits.lines} lines or ${limits.bytes} bytes per job): later lines are dropped`;
  const noteBytes = Buffer.byteLength(note);
  const { rows } = await sql<{ kept: number }>`
    with v as (
      select u.job_id, u.gen, u.at, u.message, u.fields, u.ord,
        octet_length(u.message) + coalesce(octet_length(u.fields::text), 0) as bytes
      from unnest(${lines.map((l) => l.job_id)}::uuid[], ${lines.map((l) => l.gen)}::int[],
        ${lines.map((l) => l.at.toISOString())}::timestamptz[],
        ${lines.map((l) => storable(l.message, JOB_LOG_MESSAGE_CHARS))}::text[],
        ${lines.map((l) => fieldsJson(l.fields))}::jsonb[]) with ordinality as u(job_id, gen, at, message, fields, ord)
      join jobs j on j.id = u.job_id and j.generation = u.gen
    ),
    prior as (
      select l.job_id, count(*) as n, sum(l.bytes) as b, bool_or(l.truncated) as t
      from job_logs l where l.job_id in (select job_id from v) group by l.job_id
    ),
    w as (
      select v.*, coalesce(p.t, false) as closed,
        -- The bounds leave room for the closing line, so it always fits.
        coalesce(p.n, 0) + row_number() over (partition by v.job_id order by v.ord) <= ${limits.lines - 1}
          and coalesce(p.b, 0) + sum(v.bytes) over (partition by v.job_id order by v.ord) <= ${limits.bytes - noteBytes}
          as fits
      from v left join prior p using (job_id)
    ),
    -- Cumulative counts only grow: once a line does not fit, no later line of that job does.
    rows as (
      select job_id, gen, at, message, fields, bytes, false as truncated, ord from w where not closed and fits
      union all
      select job_id, min(gen), min(at), ${note}::text, null::jsonb, ${noteBytes}::int, true, max(ord) + 1
      from w where not closed and not fits group by job_id
    ),
    ins as (
      insert into job_logs (job_id, generation, at, message, fields, bytes, truncated)
      select job_id, gen, at, message, fields, bytes, truncated from rows order by job_id, ord
      returning 1
    )
    select count(*)::int as kept from ins`.execute(db);
  return rows[0]?.kept ?? 0;
}

/** A job's kept lines, oldest first (the caller checks whose the job is). */
export async function jobLogs(db: Q, jobId: string): Promise<{ items: ApiJobLogLine[]; truncated: boolean }> {
  const rows = await db
    .selectFrom('job_logs')
    .select(['at', 'generation', 'message', 'fields', 'truncated'])
    .where('job_id', '=', jobId)
    .orderBy('id')
    .execute();
  return {
    items: rows.map((r) => ({
      at: r.at.toISOString(),
      generation: r.generation,
      message: r.message,
      fields: r.fields ?? null,
    })),
    truncated: rows.some((r) => r.truncated),
  };
}
