// Entry point of the `worker` process: one BullMQ Worker per queue it serves, plus the reconciler.
import type { Services } from '../services.js';
import { loadConfigOrExit } from '../config.js';
import { createDb, ping } from '../db/index.js';
import { startFileSweeper } from '../files/index.js';
import { createRegistry, loadJobModules } from '../jobs/index.js';
import { logStrayErrors, onShutdown } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { registerDependencyProbes, startMetricsServer } from '../metrics.js';
import { startScheduleWorker } from '../schedules/index.js';
import { DirectoryStorage } from '../files/storage.js';
import { Queues } from '../queues/index.js';
import { createRedis } from '../queues/redis.js';
import { checkDependencies, StartupError } from '../startup.js';
import { startExpirySweeper } from './expiry.js';
import { startReconciler } from './reconciler.js';
import { startRetention } from './retention.js';
import { startWorkers } from './runtime.js';

const config = loadConfigOrExit();
const log = createLogger(config, 'worker');
logStrayErrors(log);
const registry = await loadJobModules(createRegistry(), config.jobModules);

const unknown = (config.queues ?? []).filter((q) => !registry.get(q));
if (unknown.length) {
  process.stderr.write(
    `Invalid environment:\n  QUEUES=${JSON.stringify(config.QUEUES)}: unknown queue(s) ${unknown.join(', ')}; known: ${registry.types().join(', ')}\n`,
  );
  process.exit(1);
}
const unknownConcurrency = Object.keys(config.WORKER_CONCURRENCY ?? {}).filter((q) => !registry.get(q));
if (unknownConcurrency.length) {
  process.stderr.write(
    `Invalid environment:\n  WORKER_CONCURRENCY: unknown queue(s) ${unknownConcurrency.join(', ')}; known: ${registry.types().join(', ')}\n`,
  );
  process.exit(1);
}

const db = createDb(config.DATABASE_URL, config.PG_POOL_MAX);
const redis = createRedis(config, 'worker');
redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
try {
  await checkDependencies(db, redis, log);
} catch (err) {
  if (!(err instanceof StartupError)) throw err;
  log.fatal(err.message);
  process.exit(1);
}

const deps: Services = {
  config,
  db,
  redis,
  queues: new Queues(config, redis),
  storage: new DirectoryStorage(config.STORAGE_DIR),
  registry,
  log,
};
const served =
  config.queues ??
  registry
    .all()
    .filter((d) => d.process)
    .map((d) => d.type);
const running = await startWorkers(deps, served);
const reconciler = startReconciler(deps);
const expiry = startExpirySweeper(deps);
// Every worker process serves schedule ticks; BullMQ gives each tick to one of them.
const schedules = await startScheduleWorker(deps);
registerDependencyProbes({ postgres: () => ping(db), redis: () => redis.ping() });
const metrics = await startMetricsServer(config.WORKER_METRICS_PORT, config.WORKER_METRICS_HOST, log);
// Every worker sweeps expired files; SKIP LOCKED keeps them from doing the same rows.
const sweeper = startFileSweeper({ db, storage: deps.storage, log, retentionDays: config.FILE_RETENTION_DAYS });
// Old finished jobs and audit entries leave the ledger; one worker at a time (an advisory lock).
const retention = startRetention({ db, log, config });
log.info({ queues: running.workers.map((w) => w.name) }, 'worker ready');

/** After the grace period, what is still closing (a hung job's pool client, a stuck hook) gets this long. */
const SHUTDOWN_SLACK_MS = 5_000;

// Past the grace period and its slack, whatever still hangs (a hung job holding a PostgreSQL client keeps the pool's
// end waiting) is left behind: the process exits; its jobs' locks lapse and other workers run them again.
onShutdown(
  log,
  async () => {
    await reconciler.stop();
    await expiry.stop();
    await schedules.close();
    await metrics?.close();
    await sweeper.stop();
    await retention.stop();
    await running.close(config.SHUTDOWN_TIMEOUT_MS);
    await deps.queues.close();
    redis.disconnect();
    await db.destroy();
  },
  config.SHUTDOWN_TIMEOUT_MS + SHUTDOWN_SLACK_MS,
);
