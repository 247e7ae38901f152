// What operators do to queues, shared by /v1/queues and the dashboard. Retries go through the ledger: a BullMQ
// retry alone would reach a worker that finds the ledger row failed and skips it.
import { sql } from 'kysely';
import { resetForRetry } from './db/jobs.js';
import type { JobRow } from './db/types.js';
import { publishJobEvents } from './events.js';
import type { JobRegistry } from './jobs/registry.js';
import { enqueueOrLeave } from './jobs/submit.js';
import type { WorkerDeps } from './jobs/types.js';
import type { Queues } from './queues.js';

export type ControlDeps = Pick<WorkerDeps, 'config' | 'db' | 'redis' | 'queues' | 'registry' | 'log'>;

export interface QueueInfo {
  name: string;
  paused: boolean;
  counts: { waiting: number; active: number; delayed: number; failed: number; completed: number };
  workers: number;
}

/** The job-type queues operators steer (every registered type). */
export function queueNames(registry: JobRegistry): string[] {
  return registry.types();
}

/** BullMQ keeps prioritized jobs apart from plain waiting ones; to an operator both are waiting. */
export async function queueCounts(queues: Queues, name: string): Promise<QueueInfo['counts']> {
  const c = await queues.get(name).getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'failed', 'completed');
  return {
    waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
    active: c.active ?? 0,
    delayed: c.delayed ?? 0,
    failed: c.failed ?? 0,
    completed: c.completed ?? 0,
  };
}

export async function queueInfo(queues: Queues, name: string): Promise<QueueInfo> {
  const q = queues.get(name);
  const [counts, paused, workers] = await Promise.all([
    queueCounts(queues, name),
    q.isPaused(),
    // CLIENT LIST may be refused by a managed Redis; the count is then unknown, shown as 0.
    q.getWorkersCount().catch(() => 0),
  ]);
  return { name, paused, counts, workers };
}

/** failed → queued for every failed ledger job of a type, in batches; returns how many. */
export async function retryFailed(deps: ControlDeps, type: string, batch = 500): Promise<number> {
  let total = 0;
  for (;;) {
    const rows = await resetForRetry(deps.db, { type, limit: batch, states: ['failed'] });
    if (rows.length === 0) break;
    await requeue(deps, rows);
    total += rows.length;
    if (rows.length < batch) break;
  }
  return total;
}

/** One failed or cancelled job again (the dashboard's per-job retry). Undefined when it is not retryable. */
export async function retryOne(deps: ControlDeps, id: string): Promise<JobRow | undefined> {
  const [row] = await resetForRetry(deps.db, { id, limit: 1 });
  if (row) await requeue(deps, [row]);
  return row;
}

async function requeue(deps: ControlDeps, rows: JobRow[]): Promise<void> {
  // The finished BullMQ job still holds each id; it must go before the id can be queued again.
  await Promise.all(
    rows.map((r) =>
      deps.queues
        .get(r.type)
        .remove(r.id)
        .catch(() => 0),
    ),
  );
  await enqueueOrLeave(deps, rows);
  await publishAll(deps, rows);
}

/** queued/delayed → cancelled in the ledger, for one job or a whole type (the dashboard's clean, empty, obliterate). */
export async function cancelWaiting(
  deps: ControlDeps,
  type: string,
  id?: string,
  states: JobRow['state'][] = ['queued', 'delayed'],
): Promise<number> {
  let q = deps.db
    .updateTable('jobs')
    .set({ state: 'cancelled', finished_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
    .where('type', '=', type)
    .where('state', 'in', states);
  if (id) q = q.where('id', '=', id);
  const rows = await q.returningAll().execute();
  await publishAll(deps, rows);
  return rows.length;
}

/** The rows' state events, 500 to a Redis round trip. */
async function publishAll(deps: ControlDeps, rows: JobRow[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 500)
    await publishJobEvents(
      deps.redis,
      deps.config,
      rows.slice(i, i + 500).map((row) => ({ kind: 'state' as const, row })),
    );
}
