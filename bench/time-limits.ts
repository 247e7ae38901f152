// `node --import tsx bench/time-limits.ts`: what time limits and expiry add to a worker's hot path, alternating before
// and after in one run. (1) The start write (ledger startRuns, 32 runs a statement) with and without the expiry test
// it now carries, on a fresh database. (2) A run's time limit (timer, race, clear) against a bare await.
import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { createDb } from '../src/db/index.js';
import * as ledger from '../src/db/jobs.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { newId } from '../src/ids.js';
import { startTimeLimit } from '../src/workers/time-limit.js';

const BASE = process.env.BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432';
const BATCH = 32;
const ROUNDS = 150;
type Run = { id: string; gen: number };

// The start write as it was before expiry (kept here only to compare).
const before = (db: ReturnType<typeof createDb>) => (runs: Run[]) =>
  sql`
    update jobs set state = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()), updated_at = now()
    from unnest(${runs.map((r) => r.id)}::uuid[], ${runs.map((r) => r.gen)}::int[]) as v(id, gen)
    where jobs.id = v.id and jobs.generation = v.gen and jobs.state in ('queued', 'delayed', 'running')
      and jobs.cancel_requested = false
    returning jobs.*`.execute(db);

async function startWrite(db: ReturnType<typeof createDb>): Promise<string[]> {
  await sql`insert into tenants (id, webhook_secret) values ('bench', 'x')`.execute(db);
  const rows = async (): Promise<Run[]> =>
    (
      await ledger.insertJobs(
        db,
        Array.from({ length: BATCH }, () => ({
          id: newId(),
          tenant: 'bench',
          type: 'test',
          state: 'queued' as const,
          priority: 'normal' as const,
          payload: '{}',
          max_attempts: 3,
          expires_at: new Date(Date.now() + 3_600_000),
        })),
      )
    ).map((r) => ({ id: r.id, gen: r.generation }));
  const usPerJob = async (write: (runs: Run[]) => Promise<unknown>) => {
    let ms = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const runs = await rows();
      const t = performance.now();
      await write(runs);
      ms += performance.now() - t;
    }
    return ((ms / ROUNDS / BATCH) * 1000).toFixed(1);
  };
  const after = (runs: Run[]) => ledger.markRunningMany(db, runs);
  await usPerJob(after);
  await usPerJob(before(db));
  const out: string[] = [];
  for (let round = 1; round <= 5; round++)
    out.push(
      `start write, round ${round}: before ${await usPerJob(before(db))} µs/job, after ${await usPerJob(after)} µs/job`,
    );
  return out;
}

async function perRun(): Promise<string> {
  const log = pino({ level: 'silent' });
  const controller = new AbortController();
  const work = async () => 1;
  const N = 100_000;
  const time = async (f: () => Promise<unknown>) => {
    for (let i = 0; i < N / 10; i++) await f();
    const t = performance.now();
    for (let i = 0; i < N; i++) await f();
    return (((performance.now() - t) / N) * 1000).toFixed(2);
  };
  const bare = await time(work);
  const limited = await time(async () => {
    const limit = startTimeLimit({
      db: {} as never,
      job: {} as never,
      run: { id: 'x', gen: 0 },
      ms: 60_000,
      graceMs: 1_000,
      controller,
      log: () => log,
    });
    await limit.race(work());
    limit.clear();
  });
  return `time limit per run: bare await ${bare} µs, with the limit ${limited} µs`;
}

const name = `bench_time_limits_${process.pid}`;
const admin = new pg.Client({ connectionString: `${BASE}/postgres` });
await admin.connect();
await admin.query(`create database ${name}`);
const db = createDb(`${BASE}/${name}`, 2);
try {
  await migrateToLatest(db);
  for (const line of await startWrite(db)) console.log(line);
  console.log(await perRun());
} finally {
  await db.destroy();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
}
