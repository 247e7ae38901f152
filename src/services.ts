// What a process is made of, built once at its entry (src/api/server.ts, src/workers/main.ts, or a test) and handed to
// everything it runs: routes, processors, the reconciler, the admitter. A function takes the one type, or a Pick of it
// when it needs less (so a test can build just that).
import type { Logger } from 'pino';
import type { EventHub } from './api/event-hub.js';
import type { Config } from './config.js';
import type { Db } from './db/index.js';
import type { Storage } from './files/storage.js';
import type { JobRegistry } from './jobs/registry.js';
import type { Queues } from './queues/index.js';
import type { RedisClient } from './queues/redis.js';

export interface Services {
  config: Config;
  db: Db;
  /** The API's producer connection fails fast while Redis is down; a worker's retries (src/queues/redis.ts). */
  redis: RedisClient;
  queues: Queues;
  storage: Storage;
  /** The job types this process knows, for submitting and running jobs. */
  registry: JobRegistry;
  log: Logger;
}

/** The API process's: the same, with the live streams' hub (without it /events answers 503). */
export interface ApiServices extends Services {
  hub?: EventHub;
}
