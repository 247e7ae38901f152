// Retention under load: RETENTION_JOBS expired jobs (default 1,000,000; each with two timeline rows and two log
// lines) are pruned by one retention pass (src/workers/retention.ts, in this process, with the default settings) while
// a real `web` process answers status reads of kept jobs. Reports status p99 idle and while pruning (target: within 2×), the prune
// rate, and the size of jobs + job_events + job_logs after each of RETENTION_CYCLES fills (each pruned and vacuumed
// before the next): freed space is reused (plain vacuum, as autovacuum does; no VACUUM FULL), so the size stops growing.
// Its own database, dropped at the end (never bench_search_*). Standalone: `node --import tsx bench/retention.ts`.
import { pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import { sql } from 'kysely';
import type { Db } from '../src/db/index.js';
import { type PruneResult, pruneOnce, type RetentionOptions, retentionOptions } from '../src/workers/retention.js';
import { createStack, load, procfile, round, type Stack, start } from './lib.js';

const JOBS = Number(process.env.RETENTION_JOBS ?? 1_000_000);
const KEPT = 10_000;
/** Seconds of idle status reads (the reads during the pass last as long as the pass). */
const WINDOW_S = Number(process.env.RETENTION_WINDOW_S ?? 10);
const CONNECTIONS = 8;
/** Fill-prune-vacuum cycles for the steady-state size (at least 2). */
const CYCLES = Math.max(2, Number(process.env.RETENTION_CYCLES ?? 5));

/** `n` jobs that ended `days` days ago (UUIDv7-shaped ids, in time order as the real ledger's), two timeline rows and two log lines each, in chunks of one statement. */
async function fill(db: Db, tenant: string, n: number, days: number) {
  const chunk = 50_000;
  for (let from = 1; from <= n; from += chunk) {
    const to = Math.min(n, from + chunk - 1);
    await sql`
      with j as (
        insert into jobs (id, tenant, type, state, priority, payload, max_attempts, attempts, created_at, updated_at,
          started_at, finished_at)
        select (lpad(to_hex((extract(epoch from ts) * 1000)::bigint), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
          ${tenant}, 'noop', 'succeeded', 'normal', jsonb_build_object('i', i), 1, 1, ts, ts, ts, ts
        from (
          select i, md5(random()::text || i) as h, now() - make_interval(days => ${days}) + make_interval(secs => i / 1000.0) as ts
          from generate_series(${from}::int, ${to}::int) as i
        ) g
        returning id, finished_at
      ), ev as (
        insert into job_events (job_id, at, generation, attempt, from_state, to_state)
        select id, finished_at, 0, 1, s.f, s.t from j, (values ('queued', 'running'), ('running', 'succeeded')) as s(f, t)
      )
      insert into job_logs (job_id, generation, at, message, fields, bytes)
      select id, 0, finished_at, 'line ' || k, null, 6 from j, generate_series(1, 2) as k`.execute(db);
  }
}

/** Per relation (heap with toast, each index), in MiB: where growth is, when there is any. */
async function sizesByRelation(db: Db): Promise<Record<string, number>> {
  const { rows } = await sql<{ name: string; b: number }>`
    select c.relname as name, pg_table_size(c.oid) as b from pg_class c where c.relname in ('jobs', 'job_events', 'job_logs')
    union all
    select i.relname, pg_relation_size(i.oid) from pg_index x join pg_class i on i.oid = x.indexrelid
    join pg_class t on t.oid = x.indrelid where t.relname in ('jobs', 'job_events', 'job_logs')`.execute(db);
  return Object.fromEntries(rows.map((r) => [r.name, round(Number(r.b) / 1024 ** 2, 1)]));
}

async function sizeMiB(db: Db): Promise<number> {
  const { rows } = await sql<{ b: number }>`
    select pg_total_relation_size('jobs') + pg_total_relation_size('job_events') + pg_total_relation_size('job_logs') as b`.execute(
    db,
  );
  return round(Number(rows[0].b) / 1024 ** 2, 1);
}

/** One retention pass, as a worker runs it (its settings from the stack's environment, `overrides` on top). */
async function prune(stack: Stack, overrides: Partial<RetentionOptions> = {}): Promise<PruneResult> {
  const r = await pruneOnce(stack.db, { ...retentionOptions(stack.config), ...overrides });
  if (!r) throw new Error('another retention pass holds the lock');
  return r;
}

export async function run(): Promise<Record<string, number | string | boolean>> {
  const stack = await createStack('retention', { STATUS_CACHE_MS: '0' });
  const web = await start(procfile().web, stack.env, /API listening/, { port: true });
  try {
    // The trigram index is built once after the fill (as bench/search.ts does): growing it row by row is far slower.
    const { rows: defs } = await sql<{ def: string }>`
      select pg_get_indexdef(indexrelid) as def from pg_index where indexrelid = 'jobs_search_trgm'::regclass`.execute(
      stack.db,
    );
    await sql`drop index jobs_search_trgm`.execute(stack.db);
    const t0 = performance.now();
    await fill(stack.db, stack.tenant, JOBS, 40);
    await fill(stack.db, stack.tenant, KEPT, 1);
    await sql.raw(defs[0].def).execute(stack.db);
    await sql`vacuum analyze`.execute(stack.db);
    await sql`checkpoint`.execute(stack.db);
    const fillS = round((performance.now() - t0) / 1000, 1);
    const { rows: kept } = await sql<{
      id: string;
    }>`select id from jobs where finished_at > now() - interval '2 days' limit 1000`.execute(stack.db);
    let i = 0;
    const reads = (duration: number) =>
      load({
        url: `${web.url}/v1/jobs/${kept[0].id}`,
        headers: { authorization: `Bearer ${stack.key}` },
        connections: CONNECTIONS,
        duration,
        requests: [
          {
            setupRequest: (req: autocannon.Request) => ({ ...req, path: `/v1/jobs/${kept[i++ % kept.length].id}` }),
          },
        ],
      });
    /** Status reads from now until `until` settles. */
    const readsUntil = (until: Promise<unknown>) =>
      new Promise<autocannon.Result>((resolve, reject) => {
        const inst = autocannon(
          {
            url: `${web.url}/v1/jobs/${kept[0].id}`,
            headers: { authorization: `Bearer ${stack.key}` },
            connections: CONNECTIONS,
            duration: 24 * 3600,
            requests: [
              {
                setupRequest: (req: autocannon.Request) => ({ ...req, path: `/v1/jobs/${kept[i++ % kept.length].id}` }),
              },
            ],
          },
          (err, r) => (err ? reject(err) : resolve(r)),
        );
        const stop = () => inst.stop();
        until.then(stop, stop);
      });
    await reads(2);
    const idle = await reads(WINDOW_S);
    const sizeFilled = await sizeMiB(stack.db);
    if (process.env.RETENTION_SIZES)
      process.stderr.write(`  fill 1: ${JSON.stringify(await sizesByRelation(stack.db))}\n`);

    const tPrune = performance.now();
    const pass = prune(stack);
    // One load run for the whole pass, stopped when it ends: its p99 is over the same kind of sample as the idle one.
    const during = await readsUntil(pass);
    const pruned = await pass;
    const pruneS = (performance.now() - tPrune) / 1000;
    if (pruned.deleted.jobs !== JOBS) throw new Error(`pruned ${pruned.deleted.jobs} of ${JOBS}`);
    // Idle again after the pass: the spread of the two idle figures is the noise the pruning figure sits in.
    const idleAfter = await reads(WINDOW_S);
    process.stderr.write(
      `  retention: pass ${round(pruneS, 1)} s; status p99 idle ${idle.p99} / during ${during.latency.p99} / idle after ${idleAfter.p99} ms\n`,
    );

    // Steady state: vacuum (as autovacuum would) marks the freed space reusable, and each further fill of the same
    // size lands in it, so the size stops growing from one cycle to the next (B-tree pages a prune empties are
    // recycled only after the vacuum that follows it, so the first cycles still grow the indexes).
    await sql`vacuum jobs, job_events, job_logs`.execute(stack.db);
    const sizePruned = await sizeMiB(stack.db);
    const sizes: number[] = [];
    for (let cycle = 2; cycle <= CYCLES; cycle++) {
      await fill(stack.db, stack.tenant, JOBS, 40 - cycle);
      // Statistics as autovacuum's analyze keeps them after a change this size (the prune itself does not need them).
      await sql`analyze jobs, job_events, job_logs`.execute(stack.db);
      sizes.push(await sizeMiB(stack.db));
      if (process.env.RETENTION_SIZES)
        process.stderr.write(`  fill ${cycle}: ${JSON.stringify(await sizesByRelation(stack.db))}\n`);
      // Status latency is not measured here: bigger batches, no pause, to reach the steady state sooner.
      await prune(stack, { batch: 5000, pauseMs: 0 });
      await sql`vacuum jobs, job_events, job_logs`.execute(stack.db);
    }
    const [last, beforeLast] = [sizes[sizes.length - 1], sizes[sizes.length - 2]];

    return {
      jobs: JOBS,
      fill_s: fillS,
      status_p99_idle_ms: idle.p99,
      status_p99_idle_ms_unit: 'ms',
      status_p99_pruning_ms: during.latency.p99,
      status_p99_pruning_ms_anchor: idle.p99,
      status_p99_pruning_ms_unit: 'ms',
      status_p99_pruning_ms_target: '≤ 2× idle',
      status_p99_pruning_ms_ok: during.latency.p99 <= 2 * idle.p99,
      status_p99_idle_after_ms: idleAfter.p99,
      status_p50_idle_ms: idle.p50,
      status_p50_pruning_ms: during.latency.p50,
      status_rps_idle: idle.rps,
      status_rps_pruning: Math.round(during.requests.average),
      status_errors_pruning: during.errors + during.timeouts + during.non2xx,
      prune_s: round(pruneS, 1),
      prune_jobs_per_s: Math.round(JOBS / pruneS),
      size_filled_mib: sizeFilled,
      size_pruned_mib: sizePruned,
      ...Object.fromEntries(sizes.map((mib, i) => [`size_fill_${i + 2}_mib`, mib])),
      size_last_fill_mib: last,
      size_last_fill_mib_anchor: beforeLast,
      size_last_fill_mib_unit: 'MiB',
      size_last_fill_mib_target: '≤ 1.05× the fill before (stops growing)',
      size_last_fill_mib_ok: last <= 1.05 * beforeLast,
    };
  } finally {
    await web.stop();
    await stack.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(await run(), null, 2));
  process.exit(0);
}
