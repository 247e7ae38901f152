// Checks every long-running process makes before it starts serving.
import type { Logger } from 'pino';
import type { Db } from './db/index.js';
import { pendingMigrations } from './db/migrate.js';
import { type RedisClient, waitForRedis } from './queues/redis.js';

export class StartupError extends Error {}

export async function checkDependencies(db: Db, redis: RedisClient, log: Logger): Promise<void> {
  let pending: string[];
  try {
    pending = await pendingMigrations(db);
  } catch (err) {
    throw new StartupError(
      `PostgreSQL is not reachable or the database is missing (${(err as Error).message}). Run the release step: npm run migrate`,
    );
  }
  if (pending.length)
    throw new StartupError(
      `The database is behind by ${pending.length} migration(s) (${pending.join(', ')}). Run: npm run migrate`,
    );
  try {
    await waitForRedis(redis, 10_000);
  } catch {
    throw new StartupError('Redis is not reachable at REDIS_URL.');
  }
  // BullMQ loses jobs when Redis evicts keys.
  const policy = (await redis.config('GET', 'maxmemory-policy').catch(() => [])) as string[];
  if (policy[1] && policy[1] !== 'noeviction') {
    log.warn(
      { policy: policy[1] },
      `Redis maxmemory-policy is "${policy[1]}", not "noeviction": BullMQ may lose jobs under memory pressure`,
    );
  }
}
