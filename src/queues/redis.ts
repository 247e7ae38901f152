// Redis connections by role, and the one lock helper every "one process at a time" loop uses.
import { randomUUID } from 'node:crypto';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config.js';

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
 * Runs `fn` only if this process takes the lock `key` (SET NX PX `ttlMs`), then releases it if it is still ours.
 * Returns undefined when another process holds it. A holder that dies leaves the lock to expire after `ttlMs`.
 */
export async function withLock<T>(
  redis: RedisClient,
  key: string,
  ttlMs: number,
  fn: () => Promise<T>,
  token: string = randomUUID(),
): Promise<T | undefined> {
  if ((await redis.set(key, token, 'PX', ttlMs, 'NX')) !== 'OK') return undefined;
  try {
    return await fn();
  } finally {
    // Release only our own lock.
    await redis.eval(
      "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
      1,
      key,
      token,
    );
  }
}
