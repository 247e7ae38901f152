// Closes the gap between a job's terminal ledger write and its webhook's enqueue (a worker dying in between):
// ended jobs with a callback and not a single delivery try are enqueued again. The enqueue is keyed by the message
// id, so a delivery still waiting in the queue is not doubled.
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { WorkerDeps } from '../jobs/types.js';
import { enqueueWebhook } from './delivery.js';

/** Ended at least this long ago (the normal path has had its chance), and at most a day ago. */
export const SWEEP_GRACE_MS = 30_000;
const SWEEP_WINDOW = '24 hours';
const BATCH = 500;

export async function sweepOnce(
  deps: Pick<WorkerDeps, 'db' | 'queues' | 'config'>,
  graceMs = SWEEP_GRACE_MS,
): Promise<string[]> {
  const rows = await deps.db
    .selectFrom('jobs')
    .selectAll()
    .where('callback_url', 'is not', null)
    .where('state', 'in', ['succeeded', 'failed', 'cancelled'])
    .where('finished_at', '>', sql<Date>`now() - ${sql.raw(`interval '${SWEEP_WINDOW}'`)}`)
    .where('finished_at', '<', sql<Date>`now() - make_interval(secs => ${graceMs / 1000})`)
    .where(({ not, exists, selectFrom }) =>
      not(exists(selectFrom('webhook_deliveries as d').select('d.id').whereRef('d.job_id', '=', 'jobs.id'))),
    )
    .orderBy('finished_at')
    .limit(BATCH)
    .execute();
  for (const row of rows) await enqueueWebhook(deps.queues, deps.config, row);
  return rows.map((r) => r.id);
}

/** Every minute, one process at a time (a Redis lock); stopped by the returned function. */
export function startSweep(deps: WorkerDeps, intervalMs = 60_000): () => void {
  const { redis, config, log } = deps;
  const lock = `${config.QUEUE_PREFIX}:webhook-sweep-lock`;
  const token = randomUUID();
  const timer = setInterval(async () => {
    try {
      if ((await redis.set(lock, token, 'PX', intervalMs, 'NX')) !== 'OK') return;
      const ids = await sweepOnce(deps);
      if (ids.length) log.warn({ jobs: ids.length }, 'webhook sweep: enqueued deliveries that were never tried');
    } catch (err) {
      log.warn({ err: String(err) }, 'webhook sweep failed');
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
