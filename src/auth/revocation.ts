// Key revocation reaches every API process at once: the revoker publishes the key id on Redis, and each process
// drops that key from its lookup cache. A process that misses the message (Redis down) still forgets the key when
// its cache entry expires (a few seconds), so revocation is prompt, and bounded even without Redis.
import type { Config } from '../config.js';
import { createRedis, waitForRedis, type RedisClient } from '../queues/redis.js';
import { keys } from '../queues/keys.js';

export const revocationChannel = (config: Pick<Config, 'QUEUE_PREFIX'>) => keys(config).keyRevoked;

/** Tells API processes a key is revoked. Best effort: false when Redis did not take the message. */
export async function announceRevocation(redis: RedisClient, config: Config, keyId: string): Promise<boolean> {
  try {
    await redis.publish(revocationChannel(config), keyId);
    return true;
  } catch {
    return false;
  }
}

/** For one-shot callers (the CLI): a connection of its own, closed afterwards. */
export async function announceRevocationOnce(config: Config, keyId: string): Promise<boolean> {
  const redis = createRedis(config, 'producer');
  redis.on('error', () => {});
  try {
    await waitForRedis(redis, 2_000);
    return await announceRevocation(redis, config, keyId);
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

/** Calls `onRevoked(keyId)` for every revocation announced, until closed. */
export function listenForRevocations(config: Config, onRevoked: (keyId: string) => void): { close(): void } {
  const sub = createRedis(config, 'subscriber');
  sub.on('error', () => {});
  const channel = revocationChannel(config);
  // The connection subscribes to this one channel only, so every message is a revocation.
  sub.on('message', (_ch: string, keyId: string) => onRevoked(keyId));
  // Not awaited: while Redis is away the subscription waits in the offline queue (and ioredis restores it after a
  // reconnect); until then revocation falls back to the cache TTL.
  void sub.subscribe(channel).catch(() => undefined);
  return { close: () => sub.disconnect() };
}
