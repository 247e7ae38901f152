// Closes the dual write: a ledger job that should be in Redis but is not gets enqueued again, and a ledger job still
// live although BullMQ has finished it (its worker's last ledger write failed, e.g. PostgreSQL was down just then)
// gets the outcome BullMQ recorded. Both are fenced on the run generation: a job queued again goes out as a new
// generation, and an outcome BullMQ recorded for an older generation than the ledger's settles nothing.
import type { Services } from '../services.js';
import * as ledger from '../db/jobs.js';
import { publishJobEvent } from '../events.js';
import { enqueue, genOf } from '../jobs/enqueue.js';
import { enqueueWebhook } from '../webhooks/delivery.js';
import type { JobRow } from '../db/types.js';
import { bullPrefix, keys } from '../queues/keys.js';
import { errorOfReason, CANCELLED } from '../errors.js';
import { reconcilerRepairs } from '../metrics.js';
import { everyWithLock, type Service } from './periodic.js';

const BATCH = 1000;
/** Overlap between incremental passes, for transactions that committed an older updated_at late. */
const SLACK_MS = 60_000;
const FULL_SCAN_EVERY_MS = 10 * 60_000;

export interface ReconcileResult {
  checked: number;
  /** Missing from Redis, or left there only as a finished job of an older generation: queued as a new generation. */
  requeued: string[];
  /** Live in the ledger, finished in BullMQ: the ledger now says what BullMQ recorded. */
  settled: string[];
  /** Rows changed before this were checked; the next incremental pass starts here. */
  horizon: Date;
}

/**
 * One pass over the live ledger jobs unchanged for the grace period. With `since`, only those that changed after it
 * (an incremental pass: cheap however large the backlog); without, all of them (a full scan).
 */
export async function reconcileOnce(deps: Services, graceMs: number, since?: Date): Promise<ReconcileResult> {
  const { db, queues, registry } = deps;
  const horizon = await ledger.dbNowMinus(db, graceMs);
  const result: ReconcileResult = { checked: 0, requeued: [], settled: [], horizon };
  let after: string | undefined;
  for (;;) {
    const rows = await ledger.liveJobsChangedBetween(db, horizon, since, after, BATCH);
    if (rows.length === 0) break;
    after = rows[rows.length - 1].id;
    const known = rows.filter((r) => registry.get(r.type));
    const { missing, finished, stale } = await inRedis(deps, known);
    // A finished BullMQ job of an older generation holds the id the current one needs (its add was a no-op): it goes,
    // so the current generation can be queued. A finished job is not locked, so removal succeeds unless it moved.
    const freed = await Promise.all(
      stale.map(async (r) => ((await queues.get(r.type).remove(r.id)) === 1 ? r : undefined)),
    );
    const lost = [...missing, ...freed.filter((r): r is JobRow => r !== undefined)];
    if (lost.length) {
      // Queued again as a new generation, so a run of the old one still going somewhere can no longer write.
      const bumped = await ledger.requeueLost(db, lost);
      await enqueue(queues, registry, bumped);
      result.requeued.push(...bumped.map((r) => r.id));
    }
    for (const f of finished) if (await settle(deps, f)) result.settled.push(f.row.id);
    result.checked += rows.length;
    if (rows.length < BATCH) break;
  }
  return result;
}

interface Finished {
  row: JobRow;
  /** The generation BullMQ's job was queued as. */
  gen: number;
  /** BullMQ's return value (completed) or failure reason (failed). */
  outcome: { completed: true; returnvalue: string } | { completed: false; failedReason: string };
}

/**
 * Where each row's BullMQ job is: gone (missing), finished (completed or failed), or anything else. One HMGET per job,
 * one pipeline per queue: on a cluster each queue lives in its own slot (see bullPrefix), and a cluster pipeline may
 * only touch keys that one node serves.
 */
async function inRedis(
  { redis, config }: Services,
  rows: JobRow[],
): Promise<{ missing: JobRow[]; finished: Finished[]; stale: JobRow[] }> {
  const byType = new Map<string, JobRow[]>();
  for (const r of rows) byType.set(r.type, [...(byType.get(r.type) ?? []), r]);
  const missing: JobRow[] = [];
  const finished: Finished[] = [];
  const stale: JobRow[] = [];
  await Promise.all(
    [...byType].map(async ([type, list]) => {
      const prefix = bullPrefix(config, type);
      const pipeline = redis.pipeline();
      for (const r of list)
        pipeline.hmget(`${prefix}:${type}:${r.id}`, 'name', 'finishedOn', 'returnvalue', 'failedReason', 'data');
      const replies = (await pipeline.exec()) ?? [];
      list.forEach((row, i) => {
        const [err, fields] = replies[i] ?? [];
        if (err) throw err;
        const [name, finishedOn, returnvalue, failedReason, data] = fields as (string | null)[];
        if (name === null) missing.push(row);
        // finishedOn is set when BullMQ moves a job to completed or failed for good (not between attempts).
        else if (finishedOn !== null) {
          const gen = genOf(parseData(data));
          if (gen !== row.generation) {
            // An outcome of another generation says nothing about this one.
            if (gen < row.generation) stale.push(row);
            return;
          }
          finished.push({
            row,
            gen,
            outcome:
              returnvalue !== null
                ? { completed: true, returnvalue }
                : { completed: false, failedReason: failedReason ?? 'failed' },
          });
        }
      });
    }),
  );
  return { missing, finished, stale };
}

function parseData(data: string | null): { gen?: number } | undefined {
  try {
    return data ? JSON.parse(data) : undefined;
  } catch {
    return undefined;
  }
}

/** Writes BullMQ's outcome to a ledger row still live, publishes it and sends its webhook; false if the row moved meanwhile. */
async function settle(deps: Services, { row, gen, outcome }: Finished): Promise<boolean> {
  const { db, redis, config, queues, log } = deps;
  let done: JobRow | undefined;
  if (outcome.completed) {
    let result: unknown = null;
    try {
      result = JSON.parse(outcome.returnvalue);
    } catch {
      result = outcome.returnvalue;
    }
    [done] = await ledger.markSucceededMany(db, [{ id: row.id, gen, result }]);
  } else if (outcome.failedReason === CANCELLED) {
    // The runtime ends a cancelled run with this reason, after its own ledger write (which is what was lost).
    done = await ledger.markCancelled(db, row.id, ledger.LIVE, gen);
  } else {
    done = await ledger.failRun(db, { id: row.id, gen }, errorOfReason(outcome.failedReason), true);
  }
  if (!done) return false;
  log.warn(
    { job_id: row.id, type: row.type, state: done.state },
    'reconciler: the ledger missed the end of this job; it now says what BullMQ recorded',
  );
  await publishJobEvent(redis, config, 'state', done);
  await enqueueWebhook(queues, config, done).catch((err) =>
    log.error({ err, job_id: row.id }, 'webhook enqueue failed'),
  );
  return true;
}

/** Runs a pass every interval; a Redis lock keeps it to one process at a time across the fleet. */
export function startReconciler(deps: Services): Service {
  const { config, redis, log } = deps;
  const { reconcilerLock: lockKey, reconcilerHorizon: horizonKey } = keys(config);
  const pass = async () => {
    // Incremental passes check only rows that crossed the grace horizon since the last pass, so a large backlog
    // costs nothing in steady state. The horizon lives in Redis: if Redis was wiped it is gone too, and the next
    // pass is a full scan — exactly when every live job may be missing. It also expires, forcing a periodic full scan.
    const stored = await redis.get(horizonKey);
    const since = stored ? new Date(Number(stored) - SLACK_MS) : undefined;
    const r = await reconcileOnce(deps, config.RECONCILE_GRACE_MS, since);
    if (since) await redis.set(horizonKey, r.horizon.getTime(), 'KEEPTTL');
    else await redis.set(horizonKey, r.horizon.getTime(), 'PX', FULL_SCAN_EVERY_MS);
    if (r.requeued.length) reconcilerRepairs.inc({ action: 'requeued' }, r.requeued.length);
    if (r.settled.length) reconcilerRepairs.inc({ action: 'settled' }, r.settled.length);
    if (r.requeued.length)
      log.warn(
        { requeued: r.requeued.length, checked: r.checked, full: !since },
        'reconciler re-enqueued jobs missing from Redis',
      );
  };
  return everyWithLock(
    { redis, log },
    { lockKey, everyMs: config.RECONCILE_INTERVAL_MS, what: 'reconciler pass' },
    pass,
  );
}
