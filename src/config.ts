// The one place that reads the environment. Everything else receives a frozen Config.
import { z } from 'zod';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const url = (protocols: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`,
  );

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const schema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: int(0, 65535).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  PUBLIC_URL: url(['http:', 'https:']).optional(),
  REDIS_URL: z.string().min(1).default('redis://127.0.0.1:6379'),
  REDIS_CLUSTER: bool.default(false),
  DATABASE_URL: url(['postgres:', 'postgresql:']).default('postgres://postgres@127.0.0.1:5432/jobs'),
  PG_POOL_MAX: int(1, 500).default(10),
  QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_{}.-]{1,64}$/, 'letters, digits, _ . - { } only (1..64)')
    .default('jobs'),
  QUEUES: z.string().optional(),
  /** Per-queue concurrency of this worker process, `image=4,email=20`; an unlisted queue keeps its job type's own. */
  WORKER_CONCURRENCY: z
    .string()
    .regex(
      /^[A-Za-z0-9_-]+=[1-9]\d{0,3}(,[A-Za-z0-9_-]+=[1-9]\d{0,3})*$/,
      'a list like image=4,email=20 (1..9999 each)',
    )
    .transform(
      (v) =>
        Object.fromEntries(v.split(',').map((pair) => [pair.split('=')[0], Number(pair.split('=')[1])])) as Record<
          string,
          number
        >,
    )
    .optional(),
  /** Extra job-type modules to load (comma-separated paths); tests use it. */
  JOB_MODULES: z.string().optional(),
  SMTP_URL: url(['smtp:', 'smtps:']).optional(),
  STORAGE_DIR: z.string().min(1).default('var/files'),
  MAIL_DIR: z.string().min(1).default('var/mail'),
  MAIL_FROM: z.string().min(3).default('Movie Jobs <noreply@localhost>'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** `json` lines (production), or `pretty` one-line text for a terminal; unset: pretty when stdout is a TTY. */
  LOG_FORMAT: z.enum(['json', 'pretty']).optional(),
  MAX_UPLOAD_BYTES: int(1, 10 * 1024 ** 3).default(25 * 1024 * 1024),
  /** Uploads and job output files are deleted this long after they are written (a job's use of a file extends it). */
  FILE_RETENTION_DAYS: int(1, 36_500).default(30),
  /** Finished jobs (and their timeline, logs, email and webhook deliveries) are deleted this long after they ended (0: kept). */
  JOB_RETENTION_DAYS: int(0, 36_500).default(30),
  /** Audit entries are deleted this long after they were written (0: kept). */
  AUDIT_RETENTION_DAYS: int(0, 36_500).default(365),
  /** How often a worker runs a retention pass (one worker at a time, by a PostgreSQL advisory lock). */
  RETENTION_INTERVAL_MS: int(1_000, 86_400_000).default(3_600_000),
  /**
   * Jobs (or audit entries) deleted per statement, and the least pause between statements (a pause is also at least as
   * long as the statement before it took), so no lock is held long and a pass takes at most about half the database.
   */
  RETENTION_BATCH: int(1, 50_000).default(1_000),
  RETENTION_PAUSE_MS: int(0, 60_000).default(50),
  /** Image jobs refuse inputs with more pixels than this, before decoding (decompression bombs). */
  IMAGE_MAX_PIXELS: int(1, 1_000_000_000).default(40_000_000),
  WEBHOOK_ALLOW_PRIVATE: bool.default(false),
  /** Webhook delivery: per-try timeout, tries in all, and the base of the exponential backoff between them. */
  WEBHOOK_TIMEOUT_MS: int(100, 120_000).default(10_000),
  WEBHOOK_ATTEMPTS: int(1, 50).default(8),
  WEBHOOK_BACKOFF_MS: int(10, 3_600_000).default(10_000),
  /** Keep-alive comment interval on live (SSE) streams, so proxies do not close an idle one. */
  SSE_KEEPALIVE_MS: int(100, 600_000).default(15_000),
  /** Live (SSE) streams one API key may hold open at once on one API process; past it, 429. */
  SSE_MAX_STREAMS_PER_KEY: int(1, 100_000).default(50),
  API_KEY_SECRET: z.string().min(16, 'at least 16 characters').default('dev-only-api-key-secret-change-me'),
  RECONCILE_INTERVAL_MS: int(100, 3_600_000).default(10_000),
  RECONCILE_GRACE_MS: int(0, 86_400_000).default(30_000),
  /** BullMQ job lock; a job whose worker died is picked up again after about this long. */
  WORKER_LOCK_MS: int(1_000, 600_000).default(30_000),
  SHUTDOWN_TIMEOUT_MS: int(0, 3_600_000).default(30_000),
  /** How long a run past its time limit (its signal aborted) may take to stop before the runtime abandons it. */
  JOB_TIMEOUT_GRACE_MS: int(0, 3_600_000).default(10_000),
  /** How often a worker (one at a time, by a lock) ends jobs whose expires_at passed before they started. */
  EXPIRY_SWEEP_MS: int(100, 3_600_000).default(5_000),
  /**
   * How long a run's ledger finish waits before joining the next write (0: the next write). Finishes are written
   * behind either way; a longer wait widens the window the reconciler covers (the chaos tests use it to hold it open).
   */
  LEDGER_WRITE_BEHIND_MS: int(0, 600_000).default(0),
  WORKER_METRICS_PORT: int(0, 65535).default(9464),
  /** Where a worker's /metrics listens: loopback unless set (it has no authentication; e.g. 0.0.0.0 for a scraper). */
  WORKER_METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  RATE_LIMIT_PER_MINUTE: int(0, 10_000_000).default(6000),
  /** How long a status read may be answered from memory when no job event said it changed (0: always the ledger). */
  STATUS_CACHE_MS: int(0, 60_000).default(1000),
  /** Per tenant: jobs queued, delayed or running at once (0: no cap). Operators are exempt. */
  TENANT_MAX_IN_FLIGHT: int(0, 100_000_000).default(10_000),
  /**
   * Fairness (src/db/admission.ts): `on`, jobs enter BullMQ only while their tenant's window for the type has room;
   * `off`, every job enters at submit (no fairness; the benchmark's baseline).
   */
  ADMISSION: z.enum(['on', 'off']).default('on'),
  /** A tenant's window (its admitted, unfinished jobs of one type) per unit of weight. */
  ADMISSION_WINDOW: int(1, 1_000_000).default(1000),
  /** How often the admitter looks for freed windows. */
  ADMISSION_INTERVAL_MS: int(10, 60_000).default(100),
  /** Per tenant and job type: jobs running at once, unless the tenant's own limit says otherwise (0: none run). */
  TENANT_MAX_RUNNING: int(0, 1_000_000).default(1_000),
  /** A tenant's weight (its share of workers against other flooding tenants) unless it has its own. */
  TENANT_WEIGHT: z.coerce.number().positive().max(1_000).default(1),
  /** Per tenant: source megapixels × variants submitted as image jobs per minute (0: no cap). Operators are exempt. */
  TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: int(0, 10_000_000).default(2_000),
  EMAIL_RATE_PER_SECOND: int(1, 100_000).default(50),
  /** A worker retrains a tenant's recommendation model when its catalog changed and the model is older than this. */
  RECO_MODEL_REFRESH_MS: int(0, 86_400_000).default(60_000),
  /** Users per child job of a `recommendations {all_users: true}` batch. */
  RECO_CHUNK_USERS: int(1, 100_000).default(500),
  /** Statement timeout of each report query (a report over a huge range must not hold the database). */
  REPORT_STATEMENT_TIMEOUT_MS: int(100, 3_600_000).default(120_000),
  /**
   * Tracing: on when set (the OTLP/HTTP collector's base URL; spans go to `<url>/v1/traces`). The SDK reads the other
   * standard OTEL_* variables itself (protocol, sampling, batching). See src/tracing/register.ts.
   */
  OTEL_EXPORTER_OTLP_ENDPOINT: url(['http:', 'https:']).optional(),
  /** Default: `movie-jobs-web` or `movie-jobs-worker`, by process. */
  OTEL_SERVICE_NAME: z.string().min(1).max(200).optional(),
});

export type Config = Readonly<
  z.infer<typeof schema> & {
    /** Queue names this process serves; undefined means all. */
    queues: readonly string[] | undefined;
    jobModules: readonly string[];
  }
>;

class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable means "not set", as in most shells' `FOO= cmd`.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = schema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (i) => `  ${i.path.join('.')}=${JSON.stringify(env[String(i.path[0])] ?? '')}: ${i.message}`,
    );
    throw new ConfigError(`Invalid environment:\n${lines.join('\n')}`);
  }
  const list = (v: string | undefined) =>
    v
      ?.split(',')
      .map((q) => q.trim())
      .filter(Boolean);
  return Object.freeze({
    ...parsed.data,
    queues: list(parsed.data.QUEUES),
    jobModules: list(parsed.data.JOB_MODULES) ?? [],
  });
}

/** For entry points: load the config or stop the process with a message naming the variable. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}
