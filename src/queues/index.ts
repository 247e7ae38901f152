// The BullMQ queues (one per job type), their priorities and retention. Connections are in ./redis.ts, key names in
// ./keys.ts.
import { type Job, type JobsOptions, LockManager, type Processor, Queue, Worker, type WorkerOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { bullPrefix } from './keys.js';
import { createRedis, type RedisClient } from './redis.js';
import { bullTelemetry } from '../tracing/index.js';

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

/**
 * BullMQ's lock renewal keeps one entry per job id, and a run's end removes it. A worker can hold two runs of one job:
 * a run whose lock lapsed while it lives (Redis stalled past the lock, an event loop blocked) goes on finishing while
 * the stalled check has handed the job back and this very worker has taken it again. The old run's end then removed
 * the new run's entry, its lock was never renewed, and the job stalled once more and ran a third time while the second
 * still went on (test/worker-lock.test.ts). Here each job id keeps its live runs; the entry BullMQ renews is the
 * newest run's (the job can only have been taken again once the older runs' locks were gone), and it is removed when
 * that run ends, not when an older one does.
 */
class RunLockManager extends LockManager {
  /** Tokens of the live runs of each job id, oldest first. */
  private readonly runs = new Map<string, string[]>();

  override trackJob(jobId: string, token: string, ts: number, shouldCreateController?: boolean) {
    const controller = super.trackJob(jobId, token, ts, shouldCreateController);
    if (this.closed || !jobId) return controller;
    const live = this.runs.get(jobId);
    if (live) live.push(token);
    else this.runs.set(jobId, [token]);
    return controller;
  }

  override untrackJob(jobId: string) {
    // BullMQ calls this as a run ends, without saying which run: with several live, `ended` decides.
    if ((this.runs.get(jobId)?.length ?? 0) <= 1) super.untrackJob(jobId);
  }

  /** A run of `jobId` ended; the renewal stops with the newest run's end. */
  ended(jobId: string, token: string) {
    const live = this.runs.get(jobId);
    const at = live ? live.indexOf(token) : -1;
    if (!live || at < 0) return;
    if (at === live.length - 1) super.untrackJob(jobId);
    if (live.length === 1) this.runs.delete(jobId);
    else live.splice(at, 1);
  }

  override async close() {
    this.runs.clear();
    await super.close();
  }
}

class PlatformWorker<D> extends Worker<D> {
  protected override createLockManager() {
    // BullMQ's Worker is the context its own lock manager is built with; its `trace` typing differs only in form.
    const context = this as unknown as ConstructorParameters<typeof LockManager>[0];
    this.lockManager = new RunLockManager(context, {
      lockRenewTime: this.opts.lockRenewTime!,
      lockDuration: this.opts.lockDuration!,
      workerId: this.id,
      workerName: this.opts.name,
    });
  }

  override async processJob(job: Job<D>, token: string, fetchNextCallback?: () => boolean) {
    try {
      return await super.processJob(job, token, fetchNextCallback);
    } finally {
      (this.lockManager as RunLockManager).ended(job.id!, token);
    }
  }
}

/**
 * Every BullMQ Worker of the platform (job types, webhook deliveries, schedule ticks): its own blocking connection,
 * the queue's prefix, BullMQ's spans, and errors logged rather than thrown. Concurrency and lock timing are the
 * caller's: they differ by what the queue's jobs do.
 */
export function createWorker<D>(
  deps: { config: Config; log: Logger },
  name: string,
  processor: Processor<D>,
  opts: Omit<WorkerOptions, 'connection' | 'prefix' | 'telemetry'>,
): Worker<D> {
  const worker = new PlatformWorker<D>(name, processor, {
    connection: createRedis(deps.config, 'worker'),
    prefix: bullPrefix(deps.config, name),
    telemetry: bullTelemetry(),
    ...opts,
  });
  worker.on('error', (err) => deps.log.error({ err, queue: name }, 'worker error'));
  return worker;
}
