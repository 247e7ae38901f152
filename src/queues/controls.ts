// What operators do to queues, shared by /v1/queues and the dashboard. Retries go through the ledger: a BullMQ
// retry alone would reach a worker that finds the ledger row failed and skips it.
//
// A retry first removes the job's finished BullMQ record (its id must be free for the new generation), and resets the
// ledger only if that worked. BullMQ refuses to remove a job still locked by a worker: the worker has written the end
// to the ledger but not yet told BullMQ. Resetting then would let BullMQ's late outcome of the old run (and an add that
// is a no-op while the old id exists) undo the retry, so such a job is not retried (the API answers 409).
import type { Services } from '../services.js';
import { cancelWaitingJobs, resetForRetry, retryCandidates } from '../db/jobs.js';
import type { JobRow } from '../db/types.js';
import { WAITING } from '../domain.js';
import { publishJobEvents } from '../events.js';
import type { JobRegistry } from '../jobs/registry.js';
import { enqueueOrLeave } from '../jobs/submit.js';
import type { Queues } from './index.js';
import { admissionPolicy, admitNow, admittedOnRequeue } from '../db/admission.js';

export type ControlDeps = Pick<Services, 'config' | 'db' | 'redis' | 'queues' | 'registry' | 'log'>;

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

/**
 * failed → queued for every failed ledger job of a type, in batches; returns how many. A job whose BullMQ record is
 * still locked by a worker is left as it is (a later retry takes it).
 */
export async function retryFailed(deps: ControlDeps, type: string, batch = 500): Promise<number> {
  let total = 0;
  let after: string | undefined;
  for (;;) {
    const picked = await retryCandidates(deps.db, { type, after, limit: batch, states: ['failed'] });
    if (picked.length === 0) break;
    after = picked[picked.length - 1].id;
    const { free } = await freeBullIds(deps, picked);
    const rows = await resetForRetry(deps.db, free, ['failed'], admittedOnRequeue(admissionPolicy(deps.config)));
    await requeue(deps, rows);
    total += rows.length;
    if (picked.length < batch) break;
  }
  return total;
}

export type RetryOutcome =
  | { ok: true; row: JobRow }
  /** `not_retryable`: not failed or cancelled (or it changed meanwhile); `locked`: a worker still holds its run. */
  | { ok: false; reason: 'not_retryable' | 'locked' };

/** One failed or cancelled job again, as a new generation (the API's and the dashboard's per-job retry). */
export async function retryOne(deps: ControlDeps, id: string): Promise<RetryOutcome> {
  const [picked] = await retryCandidates(deps.db, { id, limit: 1 });
  if (!picked) return { ok: false, reason: 'not_retryable' };
  const { free, locked } = await freeBullIds(deps, [picked]);
  if (locked.length) return { ok: false, reason: 'locked' };
  const [row] = await resetForRetry(deps.db, free, undefined, admittedOnRequeue(admissionPolicy(deps.config)));
  if (!row) return { ok: false, reason: 'not_retryable' };
  await requeue(deps, [row]);
  return { ok: true, row };
}

/**
 * Removes the rows' finished BullMQ jobs, which still hold their ids. `free`: removed, or not in Redis at all;
 * `locked`: BullMQ refused (a worker holds the job), so the id is not free.
 */
async function freeBullIds(deps: ControlDeps, rows: JobRow[]): Promise<{ free: JobRow[]; locked: JobRow[] }> {
  const free: JobRow[] = [];
  const locked: JobRow[] = [];
  await Promise.all(
    rows.map(async (r) => {
      const queue = deps.queues.get(r.type);
      if ((await queue.remove(r.id)) === 1 || !(await queue.getJob(r.id))) free.push(r);
      else locked.push(r);
    }),
  );
  return { free, locked };
}

/**
 * With admission off the rows go to BullMQ now; on, they are admitted now as far as their windows have room, and the
 * rest wait for the admitter like new jobs.
 */
async function requeue(deps: ControlDeps, rows: JobRow[]): Promise<void> {
  const policy = admissionPolicy(deps.config);
  const waiting = rows.filter((r) => !r.admitted_at);
  const admitted = policy.on && waiting.length ? await admitNow(deps.db, policy, waiting) : [];
  await enqueueOrLeave(deps, [...rows.filter((r) => r.admitted_at), ...admitted]);
  await publishAll(deps, rows);
}

/** queued/delayed → cancelled in the ledger, for one job or a whole type (the dashboard's clean, empty, obliterate). */
export async function cancelWaiting(
  deps: ControlDeps,
  type: string,
  id?: string,
  states: readonly JobRow['state'][] = WAITING,
): Promise<number> {
  const rows = await cancelWaitingJobs(deps.db, type, states, id);
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
