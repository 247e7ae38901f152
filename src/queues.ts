// Redis connections by role, and the BullMQ queues (one per job type).
import { Queue, type JobsOptions } from 'bullmq';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';
import type { Priority } from './db/types.js';
import { bullTelemetry } from './tracing/index.js';

export type RedisClient = Redis | Cluster;

/**
 * producer: fails fast while Redis is down (the API answers 503 instead of queueing commands in memory).
 * worker: retries forever, as BullMQ workers require (maxRetriesPerRequest: null).
 * subscriber: pub/sub only.
 */
export type RedisRole = 'producer' | 'worker' | 'subscriber';

export function redisOptions(role: RedisRole): RedisOptions {
  const base: RedisOptions = {
    connectionName: `movie-jobs:${role}`,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
  };
  if (role === 'producer') {
    return {
      ...base,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectTimeout: 2_000,
      commandTimeout: 5_000,
    };
  }
  return { ...base, maxRetriesPerRequest: null, enableOfflineQueue: true };
}

/** A cluster when asked (REDIS_CLUSTER=true) or when REDIS_URL lists several nodes. */
export function isCluster(config: Pick<Config, 'REDIS_CLUSTER' | 'REDIS_URL'>): boolean {
  return config.REDIS_CLUSTER || config.REDIS_URL.includes(',');
}

export function createRedis(config: Config, role: RedisRole): RedisClient {
  const options = redisOptions(role);
  if (isCluster(config)) {
    // REDIS_URL is a comma-separated list of seed nodes; ioredis discovers the rest. Credentials and TLS come from the first.
    const urls = config.REDIS_URL.split(',').map(
      (u) => new URL(u.trim().includes('://') ? u.trim() : `redis://${u.trim()}`),
    );
    const nodes = urls.map((url) => ({ host: url.hostname, port: Number(url.port || 6379) }));
    const first = urls[0];
    const auth = {
      ...(first.username ? { username: decodeURIComponent(first.username) } : {}),
      ...(first.password ? { password: decodeURIComponent(first.password) } : {}),
      ...(first.protocol === 'rediss:' ? { tls: {} } : {}),
    };
    return new Cluster(nodes, {
      redisOptions: { ...options, ...auth },
      enableOfflineQueue: options.enableOfflineQueue,
      clusterRetryStrategy: options.retryStrategy,
    });
  }
  return new Redis(config.REDIS_URL, options);
}

/** Resolves once the client is ready, or rejects after `ms`. */
export function waitForRedis(client: RedisClient, ms = 5_000): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not reachable within ${ms} ms`));
    }, ms);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      client.off('ready', onReady);
    };
    client.on('ready', onReady);
  });
}

/**
 * BullMQ prefix of one queue. BullMQ's scripts touch many keys of a queue at once, so on a cluster they must share a
 * slot: the prefix is hash-tagged per queue (`{jobs:email}` → keys `{jobs:email}:email:*`), which keeps each queue in
 * one slot while different queues spread over the masters. A QUEUE_PREFIX that already has a `{tag}` is used as is
 * (every queue in that one slot: needed only if jobs of one queue must have parents in another, e.g. cross-queue flows).
 * On a single Redis the prefix is QUEUE_PREFIX unchanged.
 */
export function bullPrefix(config: Config, queue: string): string {
  const p = config.QUEUE_PREFIX;
  return isCluster(config) && !p.includes('{') ? `{${p}:${queue}}` : p;
}

/** Redis key names the platform owns besides BullMQ's, all under the queue prefix. */
export function keys(config: Config) {
  const p = config.QUEUE_PREFIX;
  return {
    events: `${p}:job-events`,
    cancel: `${p}:job-cancel`,
    reconcilerLock: `${p}:reconciler-lock`,
    /** Where the last reconciler pass stopped; gone (first start, Redis wiped, or expired) means a full scan. */
    reconcilerHorizon: `${p}:reconciler-horizon`,
  };
}

export const PRIORITY: Record<Priority, number> = { high: 1, normal: 5, low: 10 };

/**
 * Redis keeps only what is in flight; the ledger keeps history. A completed job is kept by age only, never by count:
 * its ledger finish is written behind (src/workers/write-behind.ts), and until that commits BullMQ's record (with its
 * return value) is what the reconciler settles the ledger from. A count would let a burst of later completions remove
 * it first; an hour is far beyond a write-behind commit (milliseconds), and BullMQ removes aged jobs only when other
 * jobs of the queue complete, which stops while PostgreSQL is away (workers pause on a failed ledger write).
 */
export const RETENTION: Pick<JobsOptions, 'removeOnComplete' | 'removeOnFail'> = {
  removeOnComplete: { age: 3600 },
  removeOnFail: { age: 7 * 24 * 3600, count: 5000 },
};

export class Queues {
  private readonly queues = new Map<string, Queue>();
  constructor(
    private readonly config: Config,
    readonly connection: RedisClient,
  ) {}

  get(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, {
        connection: this.connection,
        prefix: bullPrefix(this.config, name),
        skipWaitingForReady: true,
        telemetry: bullTelemetry(),
      });
      // Errors surface on the calls that hit them; the emitter must not crash the process.
      q.on('error', () => {});
      this.queues.set(name, q);
    }
    return q;
  }

  all(): Queue[] {
    return [...this.queues.values()];
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.all().map((q) => q.close()));
  }
}
