// What each report kind says: its SQL (aggregated in PostgreSQL), its CSV columns, its PDF table and chart.
import { sql, type CompiledQuery } from 'kysely';
import type { Db } from '../../db/index.js';
import { JOB_STATES } from '../../domain.js';

export interface ReportScope {
  /** Undefined: every tenant (operators only). */
  tenant?: string;
  from: Date;
  to: Date;
  /** The report's own job, which a jobs report leaves out: it would count itself, still running. */
  reportJob?: string;
}

export interface PdfColumn<R> {
  header: string;
  width: number;
  align?: 'left' | 'right';
  text(row: R): string;
}

export interface ReportKind<R> {
  title: string;
  /** CSV columns, in order: the row key and its header. */
  columns: { key: keyof R & string; header: string }[];
  query(db: Db, scope: ReportScope): CompiledQuery<R>;
  pdf: {
    columns: PdfColumn<R>[];
    chart: { title: string; label(row: R): string; value(row: R): number };
    /** What the figures mean, printed under the table. */
    footnote: string;
    /** A line under the period, from totals gathered while the rows stream by. */
    summary(totals: Map<string, number>): string;
    totals(row: R, add: (key: string, n: number) => void): void;
  };
}

const tenantFilter = (column: string, tenant: string | undefined) =>
  tenant === undefined ? sql`` : sql`and ${sql.ref(column)} = ${tenant}`;

const num = (v: number | null, digits = 0) =>
  v === null || v === undefined
    ? ''
    : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** 340 ms, 4.2 s, 3.1 min, 2.0 h: run times and waits span six orders of magnitude. */
function duration(ms: number | null): string {
  if (ms === null || ms === undefined) return '';
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

export interface JobsReportRow {
  type: string;
  state: string;
  jobs: number;
  share_of_type_pct: number;
  type_success_rate_pct: number | null;
  run_p50_ms: number | null;
  run_p95_ms: number | null;
  wait_p50_ms: number | null;
  wait_p95_ms: number | null;
  top_error_codes: string | null;
}

/**
 * Per type and state, over jobs created in [from, to). Run time is first start to finish (retries and their
 * backoff included, as the ledger keeps one start); queue wait is from the time the job was due (run_at, else
 * created_at) to its first start. The success rate is the type's succeeded / (succeeded + failed): a cancelled
 * job neither succeeded nor failed.
 */
export const jobsReport: ReportKind<JobsReportRow> = {
  title: 'Jobs report',
  columns: [
    { key: 'type', header: 'type' },
    { key: 'state', header: 'state' },
    { key: 'jobs', header: 'jobs' },
    { key: 'share_of_type_pct', header: 'share_of_type_pct' },
    { key: 'type_success_rate_pct', header: 'type_success_rate_pct' },
    { key: 'run_p50_ms', header: 'run_p50_ms' },
    { key: 'run_p95_ms', header: 'run_p95_ms' },
    { key: 'wait_p50_ms', header: 'wait_p50_ms' },
    { key: 'wait_p95_ms', header: 'wait_p95_ms' },
    { key: 'top_error_codes', header: 'top_error_codes' },
  ],
  query(db, s) {
    const run = sql`extract(epoch from finished_at - started_at) * 1000`;
    const wait = sql`greatest(0, extract(epoch from started_at - coalesce(run_at, created_at)) * 1000)`;
    // One sort per measure gives both percentiles (an array argument), instead of one sort per percentile.
    const pcts = (expr: typeof run, when: ReturnType<typeof sql>) =>
      sql`percentile_cont(array[0.5, 0.95]) within group (order by ${expr}) filter (where ${when})`;
    const ran = sql`started_at is not null and finished_at is not null`;
    const started = sql`started_at is not null`;
    return sql<JobsReportRow>`
      with period as not materialized (
        select type, state, created_at, started_at, finished_at, run_at, error->>'code' as code
        from jobs
        where created_at >= ${s.from} and created_at < ${s.to} ${tenantFilter('tenant', s.tenant)}
          ${s.reportJob === undefined ? sql`` : sql`and id <> ${s.reportJob}`}
      ),
      per_state as (
        select type, state, count(*) as jobs, ${pcts(run, ran)} as run, ${pcts(wait, started)} as wait
        from period group by type, state
      ),
      codes as (
        select type, state, code, count(*) as n,
          row_number() over (partition by type, state order by count(*) desc, code) as rank
        from period where code is not null group by type, state, code
      ),
      top_codes as (
        select type, state, string_agg(code || ' (' || n || ')', '; ' order by rank) as top_error_codes
        from codes where rank <= 3 group by type, state
      )
      select p.type, p.state, p.jobs,
        round(100.0 * p.jobs / sum(p.jobs) over w, 1) as share_of_type_pct,
        round(100.0 * coalesce(sum(p.jobs) filter (where p.state = 'succeeded') over w, 0)
          / nullif(sum(p.jobs) filter (where p.state in ('succeeded', 'failed')) over w, 0), 1) as type_success_rate_pct,
        round(p.run[1]::numeric) as run_p50_ms, round(p.run[2]::numeric) as run_p95_ms,
        round(p.wait[1]::numeric) as wait_p50_ms, round(p.wait[2]::numeric) as wait_p95_ms, t.top_error_codes
      from per_state p left join top_codes t on t.type = p.type and t.state = p.state
      window w as (partition by p.type)
      order by p.type, array_position(${[...JOB_STATES]}::text[], p.state)
    `.compile(db);
  },
  pdf: {
    columns: [
      { header: 'Type', width: 70, text: (r) => r.type },
      { header: 'State', width: 56, text: (r) => r.state },
      { header: 'Jobs', width: 44, align: 'right', text: (r) => num(r.jobs) },
      {
        header: 'Success',
        width: 44,
        align: 'right',
        text: (r) => (r.type_success_rate_pct === null ? '' : `${num(r.type_success_rate_pct, 1)}%`),
      },
      { header: 'Run p50', width: 46, align: 'right', text: (r) => duration(r.run_p50_ms) },
      { header: 'Run p95', width: 46, align: 'right', text: (r) => duration(r.run_p95_ms) },
      { header: 'Wait p50', width: 46, align: 'right', text: (r) => duration(r.wait_p50_ms) },
      { header: 'Wait p95', width: 46, align: 'right', text: (r) => duration(r.wait_p95_ms) },
      { header: 'Top errors', width: 117, text: (r) => r.top_error_codes ?? '' },
    ],
    chart: { title: 'Jobs per type', label: (r) => r.type, value: (r) => r.jobs },
    footnote:
      "Jobs created in the period. Success: the type's succeeded / (succeeded + failed). Run: first start to finish, retries included. Wait: from when the job was due to its first start. Top errors: the most frequent error codes.",
    totals(r, add) {
      add('jobs', r.jobs);
      add(r.state, r.jobs);
    },
    summary(t) {
      const ended = (t.get('succeeded') ?? 0) + (t.get('failed') ?? 0);
      const rate = ended ? `${((100 * (t.get('succeeded') ?? 0)) / ended).toFixed(1)}%` : 'n/a';
      return `${num(t.get('jobs') ?? 0)} jobs: ${num(t.get('succeeded') ?? 0)} succeeded, ${num(t.get('failed') ?? 0)} failed, ${num(t.get('cancelled') ?? 0)} cancelled; success rate ${rate}.`;
    },
  },
};

export interface RatingsReportRow {
  genre: string;
  ratings: number;
  movies: number;
  mean_rating: number;
  most_rated_titles: string;
}

/** Per genre, over ratings given or changed in [from, to). A movie counts in each of its genres. */
export const ratingsReport: ReportKind<RatingsReportRow> = {
  title: 'Ratings report',
  columns: [
    { key: 'genre', header: 'genre' },
    { key: 'ratings', header: 'ratings' },
    { key: 'movies', header: 'movies_rated' },
    { key: 'mean_rating', header: 'mean_rating' },
    { key: 'most_rated_titles', header: 'most_rated_titles' },
  ],
  query(db, s) {
    return sql<RatingsReportRow>`
      with per_movie as (
        select m.title, m.genres, count(*) as n, sum(r.rating) as total
        from ratings r join movies m on m.tenant = r.tenant and m.id = r.movie_id
        where r.updated_at >= ${s.from} and r.updated_at < ${s.to} ${tenantFilter('r.tenant', s.tenant)}
        group by m.tenant, m.id
      ),
      ranked as (
        select g.genre, p.title, p.n, p.total,
          row_number() over (partition by g.genre order by p.n desc, p.title) as rank
        from per_movie p
        cross join lateral unnest(case when cardinality(p.genres) = 0 then array['(none)'] else p.genres end) as g(genre)
      )
      select genre, sum(n) as ratings, count(*) as movies, round((sum(total) / sum(n))::numeric, 3) as mean_rating,
        string_agg(title || ' (' || n || ')', '; ' order by rank) filter (where rank <= 3) as most_rated_titles
      from ranked group by genre
      order by ratings desc, genre
    `.compile(db);
  },
  pdf: {
    columns: [
      { header: 'Genre', width: 90, text: (r) => r.genre },
      { header: 'Ratings', width: 55, align: 'right', text: (r) => num(r.ratings) },
      { header: 'Movies', width: 50, align: 'right', text: (r) => num(r.movies) },
      { header: 'Mean', width: 40, align: 'right', text: (r) => num(r.mean_rating, 2) },
      { header: 'Most-rated titles', width: 280, text: (r) => r.most_rated_titles },
    ],
    chart: { title: 'Ratings per genre', label: (r) => r.genre, value: (r) => r.ratings },
    footnote:
      'Ratings given or changed in the period. A movie counts in each of its genres; most-rated titles show their number of ratings.',
    totals(r, add) {
      add('genres', 1);
    },
    summary: (t) =>
      `${num(t.get('genres') ?? 0)} genres with ratings in the period (a movie counts in each of its genres).`,
  },
};
