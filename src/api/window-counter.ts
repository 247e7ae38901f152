// A fixed-window request counter per key, shared by every API process through Redis without a round trip per
// request. Each process answers from its own view of the window (the total Redis gave it at its last sync, plus
// what it has counted since) and sends what it counted as one INCRBY per key, at most once every `syncMs`.
// Another process's requests become visible within syncMs plus a round trip, so together the processes can
// overshoot a limit by what they serve in that time (and by one request per process that meets a key first).
// While Redis is unreachable each process keeps counting on its own.
import type { RedisClient } from '../queues/redis.js';

interface Window {
  window: number;
  /** The window's total across processes, as Redis last answered (our own sent counts included). */
  synced: number;
  /** Counted here and on its way to Redis. */
  sending: number;
  /** Counted here and not sent yet. */
  pending: number;
}

export interface Take {
  ok: boolean;
  /** Requests left in this window after this one (0 when refused). */
  remaining: number;
  /** Milliseconds until the window ends. */
  resetMs: number;
}

export class WindowCounter {
  private readonly windows = new Map<string, Window>();
  private timer: NodeJS.Timeout | undefined;
  private flushing = false;
  private lastFlush = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    readonly limit: number,
    readonly windowMs: number,
    private readonly syncMs = 10,
  ) {}

  /** Counts one request for `key`, unless its window is spent (then nothing is counted). */
  take(key: string, now = Date.now()): Take {
    const window = Math.floor(now / this.windowMs);
    let w = this.windows.get(key);
    if (!w || w.window !== window) {
      w = { window, synced: 0, sending: 0, pending: 0 };
      this.windows.set(key, w);
    }
    const used = w.synced + w.sending + w.pending;
    const resetMs = (window + 1) * this.windowMs - now;
    if (used >= this.limit) return { ok: false, remaining: 0, resetMs };
    w.pending++;
    this.schedule(now);
    return { ok: true, remaining: this.limit - used - 1, resetMs };
  }

  private schedule(now: number) {
    if (this.timer || this.flushing) return;
    this.timer = setTimeout(() => void this.flush(), Math.max(0, this.lastFlush + this.syncMs - now));
    this.timer.unref();
  }

  private async flush() {
    this.timer = undefined;
    if (this.redis.status !== 'ready') {
      // Keep the counts; try again later.
      this.lastFlush = Date.now() + 1_000;
      this.schedule(Date.now());
      return;
    }
    this.flushing = true;
    this.lastFlush = Date.now();
    const current = Math.floor(this.lastFlush / this.windowMs);
    const sends: Promise<void>[] = [];
    for (const [key, w] of this.windows) {
      // Nothing is on its way at this point (one flush at a time), so a passed window with nothing pending is done.
      if (w.window < current && w.pending === 0) {
        this.windows.delete(key);
        continue;
      }
      if (w.pending === 0) continue;
      const n = w.pending;
      w.pending = 0;
      w.sending += n;
      const redisKey = `${this.prefix}:${w.window}:${key}`;
      sends.push(
        Promise.all([this.redis.incrby(redisKey, n), this.redis.pexpire(redisKey, this.windowMs * 2)]).then(
          ([total]) => {
            w.sending -= n;
            w.synced = Math.max(w.synced + n, total);
          },
          () => {
            // Redis failed mid-flush: the count stays ours alone.
            w.sending -= n;
            w.synced += n;
          },
        ),
      );
    }
    await Promise.all(sends);
    this.flushing = false;
    for (const w of this.windows.values()) {
      if (w.pending > 0) {
        this.schedule(Date.now());
        break;
      }
    }
  }
}
