// Entry point of the `web` process.
// First: @hono/zod-openapi adds .openapi() to zod, and zod 4 gives each schema its methods when it is built.
import '@hono/zod-openapi';
import { serve } from '@hono/node-server';
import { loadConfigOrExit } from '../config.js';
import { createDb } from '../db/index.js';
import { createRegistry, loadJobModules } from '../jobs/index.js';
import { logStrayErrors, onShutdown } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { DirectoryStorage } from '../files/storage.js';
import { Queues } from '../queues/index.js';
import { createRedis } from '../queues/redis.js';
import { checkDependencies, StartupError } from '../startup.js';
import { listenForRevocations } from '../auth/revocation.js';
import { createApp } from './app.js';
import { forgetKey } from './auth.js';
import { EventHub } from './event-hub.js';

const config = loadConfigOrExit();
const log = createLogger(config, 'web');
logStrayErrors(log);
const db = createDb(config.DATABASE_URL, config.PG_POOL_MAX);
const redis = createRedis(config, 'producer');
redis.on('error', () => {});

try {
  await checkDependencies(db, redis, log);
} catch (err) {
  if (!(err instanceof StartupError)) throw err;
  log.fatal(err.message);
  process.exit(1);
}

const registry = await loadJobModules(createRegistry(), config.jobModules);
const queues = new Queues(config, redis);
const hub = EventHub.create(config, log);
const app = createApp({
  config,
  db,
  redis,
  queues,
  registry,
  storage: new DirectoryStorage(config.STORAGE_DIR),
  log,
  hub,
});
// A key revoked anywhere stops working here at once, not when its cache entry expires.
const revocations = listenForRevocations(config, forgetKey);

const server = serve({ fetch: app.fetch, port: config.PORT, hostname: config.HOST }, (info) => {
  const base = config.PUBLIC_URL ?? `http://localhost:${info.port}`;
  log.info({ port: info.port }, `API listening on ${base} (docs: ${base}/docs)`);
});

/** Open requests get this long once the process stops accepting; then their connections are cut. */
const REQUEST_GRACE_MS = 5_000;
/** And closing the rest (Redis, the pool) this long after that, before the process exits regardless. */
const CLOSE_SLACK_MS = 5_000;

onShutdown(
  log,
  async () => {
    // Stop accepting; give open requests (and live streams) a moment, then cut what is left.
    const cut = setTimeout(() => (server as import('node:http').Server).closeAllConnections(), REQUEST_GRACE_MS);
    // Live streams end now; their clients reconnect (Last-Event-ID) to another process.
    await hub.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    clearTimeout(cut);
    await queues.close();
    revocations.close();
    redis.disconnect();
    await db.destroy();
  },
  REQUEST_GRACE_MS + CLOSE_SLACK_MS,
);
