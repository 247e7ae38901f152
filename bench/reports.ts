// Report jobs over a 1,000,000-row ledger, run by a real worker process whose RSS is sampled from /proc.
// Target (issue 6): a `jobs` CSV over 1M ledger rows in < 30 s with worker RSS growth < 100 MiB.
// Standalone: `node --import tsx bench/reports.ts` (ROWS=… to change the ledger size; RAW=1 adds the raw pipe).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { pipeline, Readable } from 'node:stream';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { pino } from 'pino';
import { stringify } from 'csv-stringify';
import pg from 'pg';
import { ROOT, rssMiB } from './lib.js';
import { createTenant } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { createDb, type Db } from '../src/db/index.js';
import { ensureDatabase, migrateToLatest } from '../src/db/migrate.js';
import { createRegistry } from '../src/jobs/index.js';
import { submit } from '../src/jobs/submit.js';
import { Queues } from '../src/queues/index.js';
import { createRedis, waitForRedis } from '../src/queues/redis.js';
import { cursorRows } from '../src/jobs/report/cursor.js';
import { DirectoryStorage } from '../src/files/storage.js';

const MiB = 1024 * 1024;

const rssOf = (pid: number) => rssMiB(pid) * MiB;

/** Types, states and error codes in realistic proportions, spread evenly over 30 days, with UUIDv7-shaped ids. */
async function fillLedger(db: Db, tenants: string[], rows: number, start: Date) {
  const spanMs = 30 * 86_400_000;
  const batch = 250_000;
  for (let off = 0; off < rows; off += batch) {
    const n = Math.min(batch, rows - off);
    await sql`
      insert into jobs (id, tenant, type, state, priority, payload, max_attempts, attempts, error, created_at, updated_at, started_at, finished_at)
      select (lpad(to_hex((extract(epoch from t.created) * 1000)::bigint), 12, '0') || '7' || substr(md5(i::text), 1, 19))::uuid,
        (${sql.val(tenants)}::text[])[1 + (i % ${tenants.length})],
        (array['email', 'image', 'recommendations', 'report'])[1 + abs(hashint8(i + 7)) % 4],
        s.state, 'normal', '{}'::jsonb, 3, 1,
        case when s.state = 'failed' then jsonb_build_object('code', (array['smtp_rejected', 'timeout', 'invalid_payload'])[1 + (i % 3)], 'message', 'x') end,
        -- updated just now: the worker's reconciler leaves these live-state rows alone (RECONCILE_GRACE_MS below)
        t.created, now(),
        case when s.state not in ('queued', 'delayed') then t.created + make_interval(secs => (i % 997) / 100.0) end,
        case when s.state in ('succeeded', 'failed', 'cancelled') then t.created + make_interval(secs => (i % 997) / 100.0 + (i % 5003) / 1000.0) end
      from generate_series(${off}::bigint, ${off + n - 1}::bigint) as i
      cross join lateral (select abs(hashint8(i)) % 100 as k) h
      cross join lateral (select case when h.k < 90 then 'succeeded' when h.k < 96 then 'failed' when h.k < 98 then 'cancelled'
        when h.k < 99 then 'running' else 'queued' end as state) s
      cross join lateral (select ${start}::timestamptz + make_interval(secs => (i * ${spanMs / rows}::float8) / 1000.0) as created) t
    `.execute(db);
  }
  await sql`analyze jobs`.execute(db);
}

async function startWorker(env: Record<string, string>): Promise<{ child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/workers/main.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  const deadline = Date.now() + 30_000;
  while (!/worker ready/.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`worker did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function run(): Promise<Record<string, number | string | boolean>> {
  const rows = Number(process.env.ROWS ?? 1_000_000);
  // KEEP_DB=name reuses a database filled by an earlier run (and keeps it), for looking at query plans.
  const kept = process.env.KEEP_DB;
  const name = kept ?? `bench_reports_${randomBytes(4).toString('hex')}`;
  const storageDir = path.join(ROOT, 'var/bench', name);
  const env: Record<string, string> = {
    DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${name}`,
    REDIS_URL: 'redis://127.0.0.1:6379',
    QUEUE_PREFIX: name,
    QUEUES: 'report',
    STORAGE_DIR: storageDir,
    MAIL_DIR: path.join(storageDir, 'mail'),
    LOG_LEVEL: 'info',
    WORKER_METRICS_PORT: '0',
    // The synthetic ledger has queued and running rows that are in no queue; they must not be re-enqueued.
    RECONCILE_GRACE_MS: '86400000',
    RECONCILE_INTERVAL_MS: '3600000',
  };
  const config = loadConfig(env);
  await ensureDatabase(config.DATABASE_URL);
  const db = createDb(config.DATABASE_URL, 4);
  const redis = createRedis(config, 'producer');
  redis.on('error', () => {});
  const queues = new Queues(config, redis);
  const registry = createRegistry();
  const log = pino({ level: 'silent' });
  let worker: Awaited<ReturnType<typeof startWorker>> | undefined;
  const out: Record<string, number | string | boolean> = { ledger_rows: rows };
  try {
    await migrateToLatest(db);
    await waitForRedis(redis);
    const tenants = Array.from({ length: 10 }, (_, i) => `bench-${i}`);
    const start = new Date('2026-10-01T00:00:00Z');
    const t0 = Date.now();
    if (!(await db.selectFrom('tenants').select('id').where('id', '=', tenants[0]).executeTakeFirst())) {
      for (const t of tenants) await createTenant(db, t);
      await fillLedger(db, tenants, rows, start);
      out.fill_s = +((Date.now() - t0) / 1000).toFixed(1);
    }
    const from = start.toISOString();
    const to = new Date(start.getTime() + 31 * 86_400_000).toISOString();

    worker = await startWorker(env);
    const pid = worker.child.pid!;
    const def = registry.get('report')!;

    // Each scenario: one job through the real queue and worker; wall time from submission to the ledger's success.
    const scenario = async (label: string, payload: Record<string, unknown>) => {
      const base = rssOf(pid);
      let peak = base;
      const sampler = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 50);
      const started = Date.now();
      const [job] = await submit({ db, queues, registry, log }, tenants[0], [
        {
          type: 'report',
          state: 'queued',
          priority: 'normal',
          payload: JSON.stringify(def.payload.parse(payload)),
          max_attempts: 1,
          callback_url: null,
          run_at: null,
        },
      ]);
      const readRow = () => db.selectFrom('jobs').selectAll().where('id', '=', job.id).executeTakeFirstOrThrow();
      let row = await readRow();
      while (!['succeeded', 'failed'].includes(row.state)) {
        await new Promise((r) => setTimeout(r, 50));
        row = await readRow();
      }
      clearInterval(sampler);
      peak = Math.max(peak, rssOf(pid));
      if (row.state !== 'succeeded') throw new Error(`${label}: ${JSON.stringify(row.error)}`);
      const result = row.result as { rows: number; bytes: number };
      out[`${label}_s`] = +((Date.now() - started) / 1000).toFixed(2);
      out[`${label}_rows`] = result.rows;
      out[`${label}_rss_growth_mib`] = +((peak - base) / MiB).toFixed(1);
      out[`${label}_rss_peak_mib`] = +(peak / MiB).toFixed(1);
    };
    out.worker_rss_start_mib = +(rssOf(pid) / MiB).toFixed(1);
    await scenario('jobs_csv_all_tenants', { kind: 'jobs', from, to, scope: 'all' });
    // The target applies to the report over the whole ledger (every tenant: all 1M rows).
    out.jobs_csv_all_tenants_s_unit = 's';
    out.jobs_csv_all_tenants_s_target = '< 30 s';
    out.jobs_csv_all_tenants_s_ok = (out.jobs_csv_all_tenants_s as number) < 30;
    out.jobs_csv_all_tenants_rss_growth_mib_unit = 'MiB';
    out.jobs_csv_all_tenants_rss_growth_mib_target = '< 100 MiB';
    out.jobs_csv_all_tenants_rss_growth_mib_ok = (out.jobs_csv_all_tenants_rss_growth_mib as number) < 100;
    await scenario('jobs_csv_one_tenant', { kind: 'jobs', from, to });
    await scenario('jobs_pdf_all_tenants', { kind: 'jobs', from, to, scope: 'all', format: 'pdf' });

    // The streaming path itself with a large output: every ledger row through the cursor, csv-stringify and
    // storage. Report kinds aggregate in PostgreSQL, so this is the pipe's worst case. It runs in a child process
    // whose JavaScript heap is capped far below the output's size: it can only finish if nothing is held whole.
    // Minutes on a loaded machine (the cap makes GC work hard), so only with RAW=1.
    if (process.env.RAW !== '1') return out;
    const child = spawn(
      process.execPath,
      [`--max-old-space-size=${RAW_HEAP_CAP_MIB}`, '--import', 'tsx', 'bench/reports.ts', '--raw-child'],
      {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          DATABASE_URL: config.DATABASE_URL,
          STORAGE_DIR: storageDir,
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let childOut = '';
    child.stdout!.on('data', (d) => (childOut += d));
    let rawPeak = 0;
    const sampler = setInterval(() => {
      try {
        rawPeak = Math.max(rawPeak, rssOf(child.pid!));
      } catch {
        // exited between samples
      }
    }, 50);
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    clearInterval(sampler);
    if (code !== 0) throw new Error(`raw ledger CSV child failed (exit ${code}): ${childOut}`);
    const raw = JSON.parse(childOut.trim().split('\n').pop()!) as { rows: number; s: number; bytes: number };
    out.raw_ledger_csv_rows = raw.rows;
    out.raw_ledger_csv_s = raw.s;
    out.raw_ledger_csv_mib = +(raw.bytes / MiB).toFixed(1);
    out.raw_ledger_csv_heap_cap_mib = RAW_HEAP_CAP_MIB;
    out.raw_ledger_csv_rss_peak_mib = +(rawPeak / MiB).toFixed(1);
    return out;
  } finally {
    await worker?.stop();
    await queues.close();
    const keys = await (redis as import('ioredis').Redis).keys(`${name}:*`).catch(() => [] as string[]);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await db.destroy();
    if (!kept) {
      const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
      await admin.connect();
      await admin.query(`drop database if exists "${name}" with (force)`);
      await admin.end();
    }
    rmSync(storageDir, { recursive: true, force: true });
  }
}

const RAW_HEAP_CAP_MIB = 64;

/** The child of the raw scenario: streams every ledger row to one CSV file and prints {rows, s, bytes}. */
async function rawChild() {
  const config = loadConfig({ DATABASE_URL: process.env.DATABASE_URL!, STORAGE_DIR: process.env.STORAGE_DIR! });
  const db = createDb(config.DATABASE_URL, 2);
  const t0 = Date.now();
  let rows = 0;
  const query = db
    .selectFrom('jobs')
    .select(['id', 'tenant', 'type', 'state', 'created_at', 'started_at', 'finished_at'])
    .compile();
  const counted = async function* () {
    for await (const row of cursorRows(db, query, {
      timeoutMs: config.REPORT_STATEMENT_TIMEOUT_MS,
      batchSize: 2_000,
    })) {
      rows++;
      yield row;
    }
  };
  const csv = stringify({ header: true, escape_formulas: true, cast: { date: (d) => d.toISOString() } });
  pipeline(Readable.from(counted()), csv, () => {});
  const stored = await new DirectoryStorage(config.STORAGE_DIR).put('raw/ledger.csv', csv);
  await db.destroy();
  console.log(JSON.stringify({ rows, s: +((Date.now() - t0) / 1000).toFixed(2), bytes: stored.bytes }));
}

if (process.argv.includes('--raw-child')) {
  await rawChild();
} else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const result = await run();
  console.table(Object.entries(result).map(([metric, value]) => ({ metric, value })));
  console.log(JSON.stringify(result));
}
