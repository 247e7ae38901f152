// Makes sure every ended job with a callback has its message delivered, refused, or out of tries, however long ago it
// ended: a worker dying between the terminal ledger write and the enqueue, or a delivery that failed for a reason
// other than its receiver (the ledger unreachable, a crash), is enqueued again. A message is pending until
// src/webhooks/delivery.ts marks it settled (jobs.webhook_done_for = finished_at); a partial index keeps the pending
// ones cheap to find whatever the ledger's size.
import type { Services } from '../services.js';
import { randomUUID } from 'node:crypto';
import { settleWebhookMessage } from '../db/jobs.js';
import { messageSettledByTry, unsettledMessages } from '../db/webhooks.js';
import type { JobRow } from '../db/types.js';
import { enqueueWebhook, messageId, WEBHOOK_QUEUE } from './delivery.js';
import { keys } from '../queues/keys.js';

/** Ended at least this long ago: the normal path has had its chance. */
const SWEEP_GRACE_MS = 30_000;
const BATCH = 500;

type SweepDeps = Pick<Services, 'db' | 'queues' | 'config'>;

/** One pass over every pending message; returns the ids of the jobs whose delivery it enqueued again. */
export async function sweepOnce(deps: SweepDeps, graceMs = SWEEP_GRACE_MS): Promise<string[]> {
  const enqueued: string[] = [];
  let after: string | undefined;
  for (;;) {
    const rows = await unsettledMessages(deps.db, graceMs, after, BATCH);
    for (const row of rows) if (await ensureQueued(deps, row)) enqueued.push(row.id);
    if (rows.length < BATCH) return enqueued;
    after = rows[rows.length - 1].id;
  }
}

/**
 * Enqueues the job's current message unless BullMQ still holds it live (waiting, delayed, active). A failed or
 * completed BullMQ job under the message id would make the enqueue a no-op, so it is removed first; a completed one
 * whose delivery is on record is settled instead of sent again.
 */
async function ensureQueued(deps: SweepDeps, row: JobRow): Promise<boolean> {
  const queue = deps.queues.get(WEBHOOK_QUEUE);
  const id = messageId(row);
  const state = await queue.getJobState(id);
  if (state === 'completed' || state === 'failed') {
    if (await messageSettledByTry(deps.db, row.id, id)) {
      await settleWebhookMessage(deps.db, row);
      return false;
    }
    await queue.remove(id);
  } else if (state !== 'unknown') return false;
  await enqueueWebhook(deps.queues, deps.config, row);
  return true;
}

/** Every minute, one process at a time (a Redis lock); stopped by the returned function. */
export function startSweep(deps: Services, intervalMs = 60_000): () => void {
  const { redis, config, log } = deps;
  const lock = keys(config).webhookSweepLock;
  const token = randomUUID();
  const timer = setInterval(async () => {
    try {
      if ((await redis.set(lock, token, 'PX', intervalMs, 'NX')) !== 'OK') return;
      const ids = await sweepOnce(deps);
      if (ids.length) log.warn({ jobs: ids.length }, 'webhook sweep: enqueued deliveries again that were not settled');
    } catch (err) {
      log.warn({ err: String(err) }, 'webhook sweep failed');
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
