// Search over the ledger (GET /v1/jobs, the console): filters, and `q` for an id prefix or text inside payload,
// result and error. Newest first, keyset-paged on the UUIDv7 id.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, JobRow, JobState, Priority } from './types.js';

type Q = Kysely<Database> | Transaction<Database>;

/**
 * The text `q` is matched in. It must stay the expression of the index jobs_search_trgm
 * (migrations/2026-12-01T0403_job_search.ts), or PostgreSQL will not use that index.
 */
export const SEARCH_TEXT = sql<string>`(coalesce(payload::text, '') || ' ' || coalesce(result::text, '') || ' ' || coalesce(error::text, ''))`;

/** Trigram search needs this many characters to use its index. */
export const SEARCH_MIN_CHARS = 3;

export interface SearchFilter {
  /** undefined: every tenant (operators and viewers). */
  tenant?: string;
  /** A job id or id prefix, or text inside payload, result or error (case-insensitive). */
  q?: string;
  type?: string;
  state?: JobState;
  priority?: Priority;
  error_code?: string;
  created_after?: Date;
  created_before?: Date;
  parent_id?: string;
  /** Keyset cursor: only jobs with an id below this one. */
  before?: string;
  limit: number;
}

/**
 * The id range a job-id prefix covers ("0193ab" → 0193ab00-… .. 0193abff-…), or undefined when `q` cannot be the
 * start of an id (fewer than 4 hex digits, or anything but hex digits and hyphens).
 */
export function idPrefixRange(q: string): [string, string] | undefined {
  if (!/^[0-9a-f-]+$/i.test(q)) return undefined;
  const hex = q.replaceAll('-', '').toLowerCase();
  if (hex.length < 4 || hex.length > 32) return undefined;
  const uuid = (h: string) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  return [uuid(hex.padEnd(32, '0')), uuid(hex.padEnd(32, 'f'))];
}

/** `q` as a LIKE pattern matching it anywhere, its own % _ and \ taken literally. */
export function containsPattern(q: string): string {
  return `%${q.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;
}

export async function searchJobs(db: Q, f: SearchFilter): Promise<JobRow[]> {
  let query = db.selectFrom('jobs').selectAll();
  if (f.tenant !== undefined) query = query.where('tenant', '=', f.tenant);
  if (f.type) query = query.where('type', '=', f.type);
  if (f.state) query = query.where('state', '=', f.state);
  if (f.priority) query = query.where('priority', '=', f.priority);
  if (f.error_code) query = query.where(sql`error->>'code'`, '=', f.error_code);
  if (f.created_after) query = query.where('created_at', '>=', f.created_after);
  if (f.created_before) query = query.where('created_at', '<', f.created_before);
  if (f.parent_id) query = query.where('parent_id', '=', f.parent_id);
  if (f.before) query = query.where('id', '<', f.before);
  const q = f.q?.trim();
  if (q) {
    const range = idPrefixRange(q);
    const text = sql<boolean>`${SEARCH_TEXT} ilike ${containsPattern(q)}`;
    query = range ? query.where((eb) => eb.or([eb.between('id', range[0], range[1]), text])) : query.where(text);
  }
  return query.orderBy('id', 'desc').limit(f.limit).execute();
}
