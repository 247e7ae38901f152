// Shared pieces of the benchmark harness: a private database and prefix, the Procfile's processes, load, RSS.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import getPort from 'get-port';
import { sql } from 'kysely';
import pg from 'pg';
import { createKey, createTenant } from '../src/auth/keys.js';
import { loadConfig, type Config } from '../src/config.js';
import { createDb, type Db } from '../src/db/index.js';
import { ensureDatabase, migrateToLatest } from '../src/db/migrate.js';
import { createRedis } from '../src/queues/redis.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface Stack {
  env: Record<string, string>;
  config: Config;
  db: Db;
  key: string;
  tenant: string;
  close(): Promise<void>;
}

/** A fresh database and queue prefix for one benchmark run, with a tenant and a client key. */
export async function createStack(
  label: string,
  extra: Record<string, string> = {},
  opts: { keepDatabase?: string } = {},
): Promise<Stack> {
  const name = `bench_${label}_${Date.now().toString(36)}`;
  // keepDatabase: reuse (and keep) a named database across runs, for data that is slow to generate.
  const dbName = opts.keepDatabase ?? name;
  const env: Record<string, string> = {
    DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${dbName}`,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    QUEUE_PREFIX: name,
    LOG_LEVEL: 'warn',
    NODE_ENV: 'production',
    // The limiter stays on (its Redis round trip is part of every request), set above what the load can reach.
    RATE_LIMIT_PER_MINUTE: '10000000',
    // A 200k backlog is the point of some scenarios; per-tenant quotas are not what a benchmark measures.
    TENANT_MAX_IN_FLIGHT: '0',
    STORAGE_DIR: path.join(ROOT, 'var/bench', name, 'files'),
    MAIL_DIR: path.join(ROOT, 'var/bench', name, 'mail'),
    JOB_MODULES: path.join(ROOT, 'bench/fixtures/bench-jobs.ts'),
    WORKER_METRICS_PORT: '0',
    ...extra,
  };
  const config = loadConfig(env);
  await ensureDatabase(config.DATABASE_URL);
  const db = createDb(config.DATABASE_URL, 4);
  // The previous scenario's writes are flushed now, not by a checkpoint in the middle of this one.
  await sql`checkpoint`.execute(db);
  await migrateToLatest(db);
  const tenant = 'bench';
  if (!(await db.selectFrom('tenants').select('id').where('id', '=', tenant).executeTakeFirst()))
    await createTenant(db, tenant);
  const { key } = await createKey(db, config.API_KEY_SECRET, tenant, 'client');
  return {
    env,
    config,
    db,
    key,
    tenant,
    async close() {
      await db.destroy();
      if (!opts.keepDatabase) await dropDatabase(config.DATABASE_URL);
      await deletePrefix(config, `${name}*`);
    },
  };
}

export async function dropDatabase(url: string) {
  const u = new URL(url);
  const name = u.pathname.slice(1);
  u.pathname = '/postgres';
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  await c.query(`drop database if exists "${name}" with (force)`);
  await c.end();
}

export async function deletePrefix(config: Config, pattern: string) {
  const r = createRedis(config, 'worker') as import('ioredis').Redis;
  let cursor = '0';
  do {
    const [next, found] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 5000);
    cursor = next;
    if (found.length) await r.unlink(...found);
  } while (cursor !== '0');
  // UNLINK frees in a background thread: let it finish, so the next scenario does not share the CPU with it.
  const deadline = Date.now() + 30_000;
  while (/lazyfree_pending_objects:([1-9]\d*)/.test(await r.info('memory')) && Date.now() < deadline) await sleep(100);
  r.disconnect();
}

/** The Procfile's command lines by process name. */
export function procfile(): Record<string, string> {
  return Object.fromEntries(
    readFileSync(path.join(process.env.BENCH_APP_ROOT ?? ROOT, 'Procfile'), 'utf8')
      .split('\n')
      .filter((l) => /^\w+:/.test(l))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
  );
}

export interface Proc {
  pid: number;
  url?: string;
  output(): string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => live.forEach((c) => c.kill('SIGKILL')));

/** Starts a command (a Procfile line or a script) and waits until its output matches `ready`. */
export async function start(
  command: string,
  env: Record<string, string>,
  ready: RegExp,
  opts: { port?: boolean } = {},
): Promise<Proc> {
  const port = opts.port ? await getPort() : undefined;
  const child = spawn('sh', ['-c', `exec ${command}`], {
    // BENCH_APP_ROOT runs the processes of another checkout (an older commit) under the same harness: before/after.
    cwd: process.env.BENCH_APP_ROOT ?? ROOT,
    env: { ...process.env, ...env, LOG_LEVEL: 'info', ...(port ? { PORT: String(port) } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const deadline = Date.now() + 60_000;
  while (!ready.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${command} did not start:\n${out}`);
    await sleep(50);
  }
  return {
    pid: child.pid!,
    url: port ? `http://127.0.0.1:${port}` : undefined,
    output: () => out,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
      live.delete(child);
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident set size of a process, in MiB. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** CPU time (user + system, all threads) a process has used so far, in seconds; 0 once it has exited. */
export function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime in USER_HZ (100)
  } catch {
    return 0;
  }
}

/**
 * CPU time (user + system) of every PostgreSQL server process on this host so far, in seconds: backends that are alive,
 * plus those that have exited (counted in the postmaster's children's time).
 */
export function postgresCpuSeconds(): number {
  let total = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (!/^\d+ \((postgres|postmaster)\)/.test(stat)) continue;
      const f = stat.split(') ')[1].split(' ');
      total += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]); // utime stime cutime cstime
    } catch {
      /* exited meanwhile */
    }
  }
  return total / 100;
}

/** Samples a process's RSS every 100 ms until stopped; returns the peak and the first sample. */
export function sampleRss(pid: number) {
  const first = rssMiB(pid);
  let peak = first;
  const t = setInterval(() => {
    try {
      peak = Math.max(peak, rssMiB(pid));
    } catch {
      /* exited */
    }
  }, 100);
  return {
    stop: () => {
      clearInterval(t);
      return { first, peak };
    },
  };
}

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  total: number;
}

export async function load(opts: autocannon.Options): Promise<LoadResult> {
  const r = await autocannon({ connections: 64, duration: 10, ...opts });
  return {
    rps: Math.round(r.requests.average),
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors + r.timeouts,
    total: r.requests.total,
  };
}

export const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

/** The local Redis server's pid (INFO server), to read its CPU beside the platform's processes; 0 if not on this host. */
export async function redisServerPid(stack: Pick<Stack, 'config'>): Promise<number> {
  const r = createRedis(stack.config, 'worker') as import('ioredis').Redis;
  try {
    const pid = Number(/process_id:(\d+)/.exec(await r.info('server'))?.[1] ?? 0);
    return existsSync(`/proc/${pid}/stat`) ? pid : 0;
  } finally {
    r.disconnect();
  }
}
