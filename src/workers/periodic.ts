// The worker's background services (reconciler, expiry, retention, file sweep) are each a pass run periodically:
// one pass at a time per process, the next only after the last has ended, stop() waiting for the one under way.
import type { Logger } from 'pino';
import { type RedisClient, withLock } from '../queues/redis.js';

/** What every background service of a worker process is: started by its module, stopped by workers/main.ts. */
export interface Service {
  stop(): Promise<void>;
}

/**
 * Runs `pass` every `everyMs` (and once at start with `now`), one at a time. A failed pass is logged as
 * "`what` failed" and the next runs as usual. `stopped()` tells a long pass to end early.
 */
export function every(
  o: { everyMs: number; what: string; log: Logger; now?: boolean },
  pass: (stopped: () => boolean) => Promise<unknown>,
): Service {
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    if (stopped) return;
    running = running
      .then(() => pass(() => stopped))
      .then(
        () => undefined,
        (err) => o.log.error({ err }, `${o.what} failed`),
      );
  };
  const timer = setInterval(tick, o.everyMs);
  timer.unref();
  if (o.now) tick();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}

/**
 * `every`, one process at a time across the fleet: each pass takes a Redis lock (expiring after three intervals, so a
 * process that died mid-pass does not hold it for ever) and releases it only if it is still its own.
 */
export function everyWithLock(
  deps: { redis: RedisClient; log: Logger },
  o: { lockKey: string; everyMs: number; what: string },
  pass: () => Promise<unknown>,
): Service {
  return every({ everyMs: o.everyMs, what: o.what, log: deps.log }, () =>
    withLock(deps.redis, o.lockKey, o.everyMs * 3, pass),
  );
}
