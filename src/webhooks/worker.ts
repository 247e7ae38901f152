// The `webhooks` queue's worker and the sweep beside it: what a worker process starts to deliver webhooks.
import type { Services } from '../services.js';
import type { Job, Worker } from 'bullmq';
import { createWorker } from '../queues/index.js';
import type { DbGuard } from '../workers/db-guard.js';
import { deliverOnce, WEBHOOK_QUEUE, type WebhookData } from './delivery.js';
import { startSweep } from './sweep.js';

/**
 * The `webhooks` queue's worker; every worker process runs one. It sits behind the process's DbGuard like the job
 * workers: a PostgreSQL outage pauses it and hands the delivery back without using a try, instead of spending every
 * try on the ledger read and leaving the message failed.
 */
export function startWebhookWorker(deps: Services, dbGuard: DbGuard): Worker<WebhookData> {
  const { config } = deps;
  const worker = createWorker<WebhookData>(
    deps,
    WEBHOOK_QUEUE,
    (job: Job<WebhookData>) =>
      dbGuard.around(() =>
        deliverOnce(deps, job.data, job.attemptsMade + 1, job.attemptsMade + 1 >= (job.opts.attempts ?? 1)),
      ),
    // Mostly waiting on receivers: many at once is cheap.
    { concurrency: 20, lockDuration: Math.max(config.WORKER_LOCK_MS, config.WEBHOOK_TIMEOUT_MS * 2) },
  );
  dbGuard.watch(worker);
  const stopSweep = startSweep(deps);
  worker.on('closing', stopSweep);
  return worker;
}
