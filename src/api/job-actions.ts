// Cancel and retry of one job, shared by the API (/v1/jobs/{id}/cancel|retry) and the console's buttons, so both
// surfaces change a job the same way. The caller has already checked that the principal may see the job.
import type { ApiServices } from '../services.js';
import type { Principal } from '../auth/keys.js';
import * as ledger from '../db/jobs.js';
import { crossTenantReport } from '../jobs/report/index.js';
import type { JobSpec } from '../jobs/submit.js';
import type { JobRow } from '../db/types.js';
import { WAITING } from '../domain.js';
import { publishJobEvent } from '../events.js';
import { retryOne } from '../queues/controls.js';
import { keys } from '../queues/keys.js';
import { enqueueWebhook } from '../webhooks/delivery.js';
import { problem } from './errors.js';

/** Refuses new work while Redis is unreachable, before anything is written. */
export function assertRedisUp(deps: ApiServices) {
  if (deps.redis.status !== 'ready') throw problem.unavailable('The queue (Redis) is unreachable; try again shortly.');
}

/**
 * Cancels a queued or delayed job at once (`running: false`), or asks a running one to stop (`running: true`).
 * A job already over is a 409.
 */
export async function cancelJob(deps: ApiServices, job: JobRow): Promise<{ row: JobRow; running: boolean }> {
  if (ledger.TERMINAL.includes(job.state))
    throw problem.conflict(`The job is already ${job.state}.`, { state: job.state });
  assertRedisUp(deps);
  // Ledger first: a worker that picks the job up after this sees it cancelled and skips it.
  const cancelled = await ledger.markCancelled(deps.db, job.id, WAITING);
  if (cancelled) {
    await deps.queues
      .get(job.type)
      .remove(job.id)
      .catch(() => 0);
    await publishJobEvent(deps.redis, deps.config, 'state', cancelled);
    await enqueueWebhook(deps.queues, deps.config, cancelled).catch((err) =>
      deps.log.error({ err, job_id: job.id }, 'webhook enqueue failed'),
    );
    return { row: cancelled, running: false };
  }
  const running = await ledger.requestCancel(deps.db, job.id);
  if (!running) {
    const now = await ledger.findJob(deps.db, job.id);
    throw problem.conflict(`The job is already ${now?.state}.`, { state: now?.state });
  }
  await deps.redis.publish(keys(deps.config).cancel, job.id);
  return { row: running, running: true };
}

/** A report across every tenant (payload.scope "all") is for operator keys only, at submit and at retry alike. */
export function assertScopeAllowed(specs: Pick<JobSpec, 'type' | 'payload'>[], principal: Principal) {
  if (principal.role !== 'operator' && specs.some(crossTenantReport))
    throw problem.forbidden('Only operator keys may ask for a report across all tenants (payload.scope "all").');
}

/**
 * Queues a failed or cancelled job again with a fresh set of attempts; anything else is a 409. A retry runs the job
 * again as submitted, so the rules of a submission decide who may run it.
 */
export async function retryJob(deps: ApiServices, job: JobRow, principal: Principal): Promise<JobRow> {
  assertScopeAllowed([{ type: job.type, payload: job.payload as Record<string, unknown> }], principal);
  if (job.state !== 'failed' && job.state !== 'cancelled')
    throw problem.conflict(`Only failed or cancelled jobs can be retried; this one is ${job.state}.`, {
      state: job.state,
    });
  assertRedisUp(deps);
  // Nothing is changed before BullMQ has freed the id, so a Redis error here leaves the job as it was.
  const retried = await retryOne(deps, job.id).catch((err: unknown) => {
    deps.log.warn({ err, job_id: job.id }, 'retry: the queue did not answer');
    throw problem.unavailable('The queue (Redis) did not answer; the job is unchanged. Try again shortly.');
  });
  if (!retried.ok && retried.reason === 'locked')
    throw problem.conflict(
      'A worker still holds this job (it is reporting its end to the queue); retry it again in a moment.',
      { state: job.state },
    );
  if (!retried.ok) throw problem.conflict('The job changed state meanwhile; read it again.');
  return retried.row;
}
