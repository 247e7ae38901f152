import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { EventHub } from './event-hub.js';
import type { Db } from '../db/index.js';
import type { JobRegistry } from '../jobs/registry.js';
import type { Queues } from '../queues/index.js';
import type { RedisClient } from '../queues/redis.js';
import type { Storage } from '../files/storage.js';

/** Everything a route needs, built once per process by server.ts (or by a test). */
export interface AppDeps {
  config: Config;
  db: Db;
  /** The producer connection: fails fast while Redis is down. */
  redis: RedisClient;
  queues: Queues;
  registry: JobRegistry;
  storage: Storage;
  log: Logger;
  /** Job events for live streams (one Redis subscriber per process); without it /events answers 503. */
  hub?: EventHub;
}
