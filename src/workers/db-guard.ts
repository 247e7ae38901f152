// Workers stop taking jobs while PostgreSQL is unreachable, and start again by themselves when it answers.
// Without this, every job picked up during an outage would fail its ledger write, burn an attempt, and after a
// few backoffs end failed in BullMQ with the ledger still saying it is live: work lost to an outage.
import { Worker } from 'bullmq';
import type { Logger } from 'pino';
import { isDbUnavailable } from '../errors.js';
import { ping, type Db } from '../db/index.js';

export class DbGuard {
  private readonly workers = new Set<Worker>();
  private probe: NodeJS.Timeout | undefined;
  private down = false;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    private readonly probeMs = 1_000,
  ) {}

  watch(worker: Worker): void {
    this.workers.add(worker);
  }

  /**
   * Runs one job's processing. A PostgreSQL outage anywhere in it (the ledger, or the processor's own queries)
   * pauses this process's workers and hands the job back to the queue without using an attempt; it runs again
   * after the database returns (at least once, as every job).
   */
  async around<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      // ECONNREFUSED and friends also come from SMTP or webhooks: pause only when PostgreSQL itself is away.
      if (!isDbUnavailable(err) || (await this.reachable())) throw err;
      this.trip(err);
      throw Worker.RateLimitError();
    }
  }

  /** PostgreSQL refused a write made outside a job's processing (a finish written behind): pause as above. */
  outage(err: unknown): void {
    if (isDbUnavailable(err)) this.trip(err);
  }

  get paused(): boolean {
    return this.down;
  }

  private trip(err: unknown): void {
    if (this.down) return;
    this.down = true;
    this.log.warn(
      { err: String((err as Error)?.message ?? err) },
      'PostgreSQL unreachable: workers pause taking jobs until it answers',
    );
    // Not awaited: pause() without doNotWaitActive would wait for the very job that called us.
    for (const w of this.workers) void w.pause(true).catch(() => undefined);
    this.probe = setInterval(() => void this.check(), this.probeMs);
    this.probe.unref();
  }

  private async reachable(): Promise<boolean> {
    try {
      await ping(this.db);
      return true;
    } catch {
      return false;
    }
  }

  private async check(): Promise<void> {
    if (!(await this.reachable()) || !this.down) return;
    this.down = false;
    clearInterval(this.probe);
    this.log.info('PostgreSQL answers again: workers resume');
    for (const w of this.workers) await w.resume();
  }

  stop(): void {
    clearInterval(this.probe);
  }
}
