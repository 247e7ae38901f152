// The expiry sweep: jobs whose expires_at passed before they started end cancelled with error.code "expired" without
// waiting for a worker to pick them up (a paused queue, a stopped worker type, a backlog, or jobs still waiting in the
// ledger for admission). Works on the ledger's queued and delayed rows, in Redis or not; their BullMQ jobs are removed
// afterwards, and one a worker holds already finds its row ended and does not run. A worker that starts an expired job
// before the sweep reaches it settles it the same way (src/db/jobs.ts startRuns).
import type { Services } from '../services.js';
import * as ledger from '../db/jobs.js';
import type { JobRow } from '../db/types.js';
import { publishJobEvents } from '../events.js';
import { keys } from '../queues/keys.js';
import { enqueueWebhook } from '../webhooks/delivery.js';
import { everyWithLock, type Service } from './periodic.js';

const BATCH = 500;

/** One pass: ends every overdue job, in batches; returns the rows it ended. */
export async function expireOnce(deps: Services): Promise<JobRow[]> {
  const { db, redis, config, queues, registry, log } = deps;
  const ended: JobRow[] = [];
  for (;;) {
    const rows = await ledger.expireOverdue(db, BATCH);
    if (!rows.length) break;
    ended.push(...rows);
    await publishJobEvents(
      redis,
      config,
      rows.map((row) => ({ kind: 'state' as const, row })),
    );
    await Promise.all(
      rows.map(async (row) => {
        await enqueueWebhook(queues, config, row).catch((err) =>
          log.error({ err, job_id: row.id }, 'webhook enqueue failed'),
        );
        // A job a worker holds cannot be removed (it is locked); that run finds its row ended and stops.
        if (registry.get(row.type))
          await queues
            .get(row.type)
            .remove(row.id)
            .catch(() => 0);
      }),
    );
    if (rows.length < BATCH) break;
  }
  if (ended.length) log.info({ expired: ended.length }, 'expired jobs that were not started by their expires_at');
  return ended;
}

/** Runs a pass every EXPIRY_SWEEP_MS, one process at a time across the fleet. */
export function startExpirySweeper(deps: Services): Service {
  return everyWithLock(
    deps,
    { lockKey: keys(deps.config).expiryLock, everyMs: deps.config.EXPIRY_SWEEP_MS, what: 'expiry sweep' },
    () => expireOnce(deps),
  );
}
