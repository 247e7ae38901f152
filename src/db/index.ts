import { hostname } from 'node:os';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Database } from './types.js';

// COUNT(*) and BIGINT come back as strings by default; every count we keep fits a double.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (v) => Number(v));

export type Db = Kysely<Database>;

export function createDb(connectionString: string, max = 10): Db {
  const pool = new pg.Pool({
    connectionString,
    max,
    // Fail fast when PostgreSQL is down, so the API answers 503 quickly instead of hanging.
    connectionTimeoutMillis: 2_000,
    idleTimeoutMillis: 30_000,
    // host:pid names this process in pg_stat_activity, and in a job's timeline (job_events.process records the
    // application_name of the connection that started a run). An application_name in the URL wins.
    application_name: `${hostname()}:${process.pid}`.slice(0, 63),
  });
  // An idle client losing its server must not crash the process; the pool replaces it.
  pool.on('error', () => {});
  // pg-pool removes its error listener from a client while it is checked out, and pg emits 'error' on a client
  // whose socket dies even when the query it was running is rejected: without a listener of our own, PostgreSQL
  // going away mid-query crashes the process (the query's caller still gets the error and answers 503).
  pool.on('connect', (client) => client.on('error', () => {}));
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

/** One round trip to PostgreSQL: health checks and outage probes. */
export async function ping(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
}
