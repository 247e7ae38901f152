// The BullMQ queues (one per job type), their priorities and retention. Connections are in ./redis.ts, key names in
// ./keys.ts.
import { type JobsOptions, type Processor, Queue, Worker, type WorkerOptions } from 'bullmq';
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
  const worker = new Worker<D>(name, processor, {
    connection: createRedis(deps.config, 'worker'),
    prefix: bullPrefix(deps.config, name),
    telemetry: bullTelemetry(),
    ...opts,
  });
  worker.on('error', (err) => deps.log.error({ err, queue: name }, 'worker error'));
  return worker;
}
