// Search over the ledger (GET /v1/jobs, the console): filters, and `q` for an id prefix or text inside payload,
// result and error. Newest first, keyset-paged on the UUIDv7 id.
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import type { JobState, Priority } from '../domain.js';
import type { Database, JobRow } from './types.js';

type Q = Kysely<Database> | Transaction<Database>;

/**
 * The text `q` is matched in. It must stay the expression of the index jobs_search_trgm
 * (migrations/2026-12-01T0403_job_search.ts), or PostgreSQL will not use that index.
 */
const SEARCH_TEXT = sql<string>`(coalesce(payload::text, '') || ' ' || coalesce(result::text, '') || ' ' || coalesce(error::text, ''))`;

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
  /** Jobs submitted with this dedupe_key (jobs_dedupe_key_idx). */
  dedupe_key?: string;
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
function containsPattern(q: string): string {
  return `%${q.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;
}

/**
 * Rows a search by text first looks through, newest first, before it asks the trigram index. A term found in at least
 * a page of these (a common one) is answered from them; a rarer one from the index, whose matches are then few.
 */
const RECENT_WINDOW = 1_000;

const where = (conds: RawBuilder<unknown>[]) => (conds.length ? sql`where ${sql.join(conds, sql` and `)}` : sql``);

/**
 * Newest first. With `q`, two plans either of which PostgreSQL alone might pick wrongly (it cannot know how a term
 * is spread over tenants and time): walking the id order works when matches are many and recent, and scans the whole
 * ledger when they are few; the trigram index works when they are few, and fetches and sorts every match when they
 * are many. So the newest RECENT_WINDOW rows in scope are searched first, and only if they hold less than a page
 * is the index asked, for every match (a materialized CTE, so the planner cannot turn back to walking the id order).
 */
export async function searchJobs(db: Q, f: SearchFilter): Promise<JobRow[]> {
  // In scope: whose jobs, and the cursor. Both follow the id order (the pkey, or jobs_tenant_id_idx).
  const scope: RawBuilder<unknown>[] = [];
  if (f.tenant !== undefined) scope.push(sql`tenant = ${f.tenant}`);
  if (f.before) scope.push(sql`id < ${f.before}::uuid`);
  const filters: RawBuilder<unknown>[] = [];
  if (f.type) filters.push(sql`type = ${f.type}`);
  if (f.state) filters.push(sql`state = ${f.state}`);
  if (f.priority) filters.push(sql`priority = ${f.priority}`);
  if (f.error_code) filters.push(sql`error->>'code' = ${f.error_code}`);
  if (f.created_after) filters.push(sql`created_at >= ${f.created_after}`);
  if (f.created_before) filters.push(sql`created_at < ${f.created_before}`);
  if (f.parent_id) filters.push(sql`parent_id = ${f.parent_id}::uuid`);
  if (f.dedupe_key) filters.push(sql`dedupe_key = ${f.dedupe_key}`);
  const q = f.q?.trim();
  if (!q) {
    const { rows } = await sql<JobRow>`select * from jobs ${where([...scope, ...filters])}
      order by id desc limit ${f.limit}`.execute(db);
    return rows;
  }
  const range = idPrefixRange(q);
  const text = sql`${SEARCH_TEXT} ilike ${containsPattern(q)}`;
  filters.push(range ? sql`(id between ${range[0]}::uuid and ${range[1]}::uuid or ${text})` : text);
  const { rows: recent } = await sql<JobRow>`
    select * from (select * from jobs ${where(scope)} order by id desc limit ${RECENT_WINDOW}) jobs
    ${where(filters)} order by id desc limit ${f.limit}`.execute(db);
  if (recent.length >= f.limit) return recent;
  const { rows } = await sql<JobRow>`
    with found as materialized (select * from jobs ${where([...scope, ...filters])})
    select * from found order by id desc limit ${f.limit}`.execute(db);
  return rows;
}
