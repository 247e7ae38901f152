// Test infrastructure: a private database and queue prefix per test file, real processes, clean teardown.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import getPort from 'get-port';
import { Cluster } from 'ioredis';
import { pino } from 'pino';
import pg from 'pg';
import { createApp } from '../src/api/app.js';
import { EventHub } from '../src/api/event-hub.js';
import { createKey, createTenant } from '../src/auth/keys.js';
import { loadConfig, type Config } from '../src/config.js';
import { createDb, type Db } from '../src/db/index.js';
import { ensureDatabase, migrateToLatest } from '../src/db/migrate.js';
import { createRegistry, loadJobModules, type JobRegistry } from '../src/jobs/index.js';
import { DirectoryStorage } from '../src/files/storage.js';
import { startWorkers, type RunningWorkers } from '../src/workers/runtime.js';
import { Queues } from '../src/queues/index.js';
import { createRedis, waitForRedis, type RedisClient } from '../src/queues/redis.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const TEST_JOBS = 'test/fixtures/test-jobs.ts';
const BASE_PG = 'postgres://postgres@127.0.0.1:5432';
const BASE_REDIS = 'redis://127.0.0.1:6379';

export interface TestEnv {
  config: Config;
  /** The environment for processes spawned against this test's database and prefix. */
  env: Record<string, string>;
  db: Db;
  redis: RedisClient;
  queues: Queues;
  registry: JobRegistry;
  app: ReturnType<typeof createApp>;
  storage: DirectoryStorage;
  /** The API's job-event subscriber (one Redis connection). */
  hub: EventHub;
  /** Runs this env's workers in the test process (faster than a process when no crash is involved). */
  startWorkers(queues?: string[]): Promise<RunningWorkers>;
  close(): Promise<void>;
}

export const silentLog = pino({ level: 'silent' });

export function uniqueName(label: string): string {
  return `${label
    .replace(/[^a-z0-9]/gi, '_')
    .toLowerCase()
    .slice(0, 30)}_${randomBytes(4).toString('hex')}`;
}

/**
 * A fresh database (migrated) and queue prefix. `env` overrides go to the config and to spawned processes.
 * The test job types (test/fixtures/test-jobs.ts) are registered unless `testJobs: false`.
 */
export async function createTestEnv(
  label: string,
  opts: { env?: Record<string, string>; testJobs?: boolean } = {},
): Promise<TestEnv> {
  const name = uniqueName(label);
  const env: Record<string, string> = {
    DATABASE_URL: process.env.TEST_PG_URL_BASE ? `${process.env.TEST_PG_URL_BASE}/${name}` : `${BASE_PG}/${name}`,
    REDIS_URL: process.env.TEST_REDIS_URL ?? BASE_REDIS,
    QUEUE_PREFIX: `t_${name}`,
    LOG_LEVEL: 'warn',
    NODE_ENV: 'test',
    STORAGE_DIR: path.join(ROOT, 'var/test', name, 'files'),
    MAIL_DIR: path.join(ROOT, 'var/test', name, 'mail'),
    RECONCILE_INTERVAL_MS: '500',
    RECONCILE_GRACE_MS: '1000',
    WORKER_LOCK_MS: '3000',
    WORKER_METRICS_PORT: '0',
    SHUTDOWN_TIMEOUT_MS: '10000',
    ...(opts.testJobs === false ? {} : { JOB_MODULES: TEST_JOBS }),
    ...opts.env,
  };
  const config = loadConfig(env);
  await ensureDatabase(config.DATABASE_URL);
  const db = createDb(config.DATABASE_URL, 5);
  await migrateToLatest(db);
  const redis = createRedis(config, 'producer');
  redis.on('error', () => {});
  await waitForRedis(redis);
  const registry = await loadJobModules(
    createRegistry(),
    config.jobModules.map((m) => path.resolve(ROOT, m)),
  );
  const queues = new Queues(config, redis);
  const storage = new DirectoryStorage(config.STORAGE_DIR);
  const hub = EventHub.create(config);
  const app = createApp({ config, db, redis, queues, registry, storage, log: silentLog, hub });
  const running: RunningWorkers[] = [];
  return {
    config,
    env,
    db,
    redis,
    queues,
    registry,
    app,
    storage,
    hub,
    async startWorkers(
      names = registry
        .all()
        .filter((d) => d.process)
        .map((d) => d.type),
    ) {
      const w = await startWorkers({ config, db, redis, queues, storage, registry, log: silentLog }, names);
      running.push(w);
      return w;
    },
    async close() {
      await Promise.all(running.map((w) => w.close(1_000)));
      await queues.close();
      await hub.close();
      await deleteKeys(config);
      redis.disconnect();
      await db.destroy();
      await dropDatabase(config.DATABASE_URL);
    },
  };
}

/** Removes every Redis key of this config's queue prefix: what a wiped Redis leaves of this test's queues. */
export async function deleteKeys(config: Config) {
  const prefix = config.QUEUE_PREFIX;
  const r = createRedis(
    loadConfig({ REDIS_URL: config.REDIS_URL, REDIS_CLUSTER: String(config.REDIS_CLUSTER) }),
    'worker',
  );
  try {
    // On a cluster, SCAN each master, and match the per-queue hash-tagged prefix (`{prefix:queue}:…`) as well.
    if (r instanceof Cluster) await waitForRedis(r);
    const nodes = r instanceof Cluster ? r.nodes('master') : [r];
    for (const node of nodes) {
      for (const match of [`${prefix}:*`, `{${prefix}:*`]) {
        let cursor = '0';
        do {
          const [next, found] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000);
          cursor = next;
          if (found.length) await Promise.all(found.map((k) => node.unlink(k)));
        } while (cursor !== '0');
      }
    }
  } catch {
    // The server may be gone (chaos tests): nothing to clean.
  } finally {
    r.disconnect();
  }
}

export async function dropDatabase(url: string) {
  const u = new URL(url);
  const name = u.pathname.slice(1);
  u.pathname = '/postgres';
  const client = new pg.Client({ connectionString: u.toString(), connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query(`drop database if exists "${name}" with (force)`);
  } catch {
    // The server may be gone (chaos tests).
  } finally {
    await client.end().catch(() => {});
  }
}

export async function tenantWithKeys(env: TestEnv, name = uniqueName('tenant').replace(/_/g, '-')) {
  const { webhook_secret } = await createTenant(env.db, name);
  const client = await createKey(env.db, env.config.API_KEY_SECRET, name, 'client');
  const operator = await createKey(env.db, env.config.API_KEY_SECRET, name, 'operator');
  return { tenant: name, webhook_secret, clientKey: client.key, operatorKey: operator.key, clientKeyId: client.id };
}

export interface Reply<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

/** Calls the app in process (no socket) or a base URL, with a key. */
export function client(
  target: { request: (path: string, init?: RequestInit) => Response | Promise<Response> } | string,
  key?: string,
) {
  return async function call<T = any>(
    method: string,
    urlPath: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Reply<T>> {
    const init: RequestInit = {
      method,
      headers: {
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...(body !== undefined && typeof body !== 'string' ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    };
    const res = typeof target === 'string' ? await fetch(target + urlPath, init) : await target.request(urlPath, init);
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    return { status: res.status, headers: res.headers, body: parsed as T };
  };
}

/** Polls GET /v1/jobs/:id until the job is in one of `states`; returns the job. */
export function jobInState(api: ReturnType<typeof client>, id: string, states: string[], timeout = 20_000) {
  return waitFor(
    async () => {
      const r = await api('GET', `/v1/jobs/${id}`);
      return states.includes(r.body.state) ? r.body : undefined;
    },
    { timeout, what: `job ${id} to reach ${states.join('|')}` },
  );
}

export async function waitFor<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  opts: { timeout?: number; interval?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeout ?? 20_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, opts.interval ?? 50));
  }
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

export interface Proc {
  child: ChildProcess;
  port?: number;
  url?: string;
  output(): string;
  /** Sends a signal and waits for the exit. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

const ENTRY = { web: 'src/api/server.ts', worker: 'src/workers/main.ts' } as const;
const READY = { web: /API listening/, worker: /worker ready/ } as const;

/**
 * Starts a real `web` or `worker` process and waits until it says it is ready (`startTimeoutMs`, 30 s by default;
 * start-up is slower on a loaded machine).
 */
export async function startProcess(
  kind: 'web' | 'worker',
  env: Record<string, string>,
  extra: Record<string, string> = {},
  opts: { startTimeoutMs?: number } = {},
): Promise<Proc> {
  const port = kind === 'web' ? await getPort() : undefined;
  // As the Procfile runs them: the tracing bootstrap first (it does nothing unless OTEL_EXPORTER_OTLP_ENDPOINT is set).
  const child = spawn(process.execPath, ['--import', 'tsx', '--import', './src/tracing/register.ts', ENTRY[kind]], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      ...env,
      LOG_LEVEL: 'info',
      ...(port ? { PORT: String(port) } : {}),
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? (signal ? null : 0));
    }),
  );
  await waitFor(() => READY[kind].test(out) || child.exitCode !== null, {
    timeout: opts.startTimeoutMs ?? 30_000,
    what: `${kind} to start`,
  }).catch((err) => {
    // A process that missed its start-up deadline must not become ready later and take jobs behind the test's back.
    child.kill('SIGKILL');
    throw err;
  });
  if (child.exitCode !== null) throw new Error(`${kind} exited at start:\n${out}`);
  return {
    child,
    port,
    url: port ? `http://127.0.0.1:${port}` : undefined,
    output: () => out,
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
