// A periodic pass that one process at a time runs across the fleet: each pass takes a Redis lock (SET NX, expiring
// after three intervals, so a process that died mid-pass does not hold it for ever) and releases it only if it is
// still its own. The reconciler's loop (src/workers/reconciler.ts) is the same shape, with its horizon besides.
import type { Logger } from 'pino';
import { type RedisClient, withLock } from '../queues/redis.js';

export function everyWithLock(
  deps: { redis: RedisClient; log: Logger },
  o: { lockKey: string; everyMs: number; what: string },
  pass: () => Promise<unknown>,
): { stop(): Promise<void> } {
  const { redis, log } = deps;
  let stopped = false;
  let running: Promise<void> = Promise.resolve();

  const tick = async () => {
    await withLock(redis, o.lockKey, o.everyMs * 3, pass);
  };

  const timer = setInterval(() => {
    if (stopped) return;
    running = running.then(tick).catch((err) => log.error({ err }, `${o.what} failed`));
  }, o.everyMs);
  timer.unref();

  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
