// Closes the dual write: a ledger job that should be in Redis but is not gets enqueued again.
import { randomUUID } from 'node:crypto';
import * as ledger from '../db/jobs.js';
import { enqueue } from '../jobs/enqueue.js';
import type { JobRegistry } from '../jobs/registry.js';
import type { JobRow } from '../db/types.js';
import type { WorkerDeps } from '../jobs/types.js';
import { bullPrefix, keys } from '../queues.js';

const BATCH = 1000;

export interface ReconcileResult {
  checked: number;
  requeued: string[];
}

/** One pass over every live ledger job older than the grace period. */
export async function reconcileOnce(deps: WorkerDeps, registry: JobRegistry, graceMs: number): Promise<ReconcileResult> {
  const { db, queues } = deps;
  const result: ReconcileResult = { checked: 0, requeued: [] };
  let after: string | undefined;
  for (;;) {
    const rows = await ledger.staleLiveJobs(db, graceMs, after, BATCH);
    if (rows.length === 0) break;
    after = rows[rows.length - 1].id;
    const known = rows.filter((r) => registry.get(r.type));
    const missing = await missingFromRedis(deps, known);
    if (missing.length) {
      await enqueue(queues, registry, missing);
      result.requeued.push(...missing.map((r) => r.id));
    }
    result.checked += rows.length;
    if (rows.length < BATCH) break;
  }
  return result;
}

/**
 * The rows whose BullMQ job key is gone. One pipeline per queue: on a cluster each queue lives in its own slot
 * (see bullPrefix), and a cluster pipeline may only touch keys that one node serves.
 */
async function missingFromRedis({ redis, config }: WorkerDeps, rows: JobRow[]): Promise<JobRow[]> {
  const byType = new Map<string, JobRow[]>();
  for (const r of rows) byType.set(r.type, [...(byType.get(r.type) ?? []), r]);
  const missing = await Promise.all(
    [...byType].map(async ([type, list]) => {
      const prefix = bullPrefix(config, type);
      const pipeline = redis.pipeline();
      for (const r of list) pipeline.exists(`${prefix}:${type}:${r.id}`);
      const exists = (await pipeline.exec()) ?? [];
      return list.filter((_, i) => {
        const [err, n] = exists[i] ?? [];
        if (err) throw err;
        return n !== 1;
      });
    }),
  );
  return missing.flat();
}

/** Runs a pass every interval; a Redis lock keeps it to one process at a time across the fleet. */
export function startReconciler(deps: WorkerDeps, registry: JobRegistry): { stop(): Promise<void> } {
  const { config, redis, log } = deps;
  const lockKey = keys(config).reconcilerLock;
  const token = randomUUID();
  let stopped = false;
  let running: Promise<void> = Promise.resolve();

  const tick = async () => {
    const got = await redis.set(lockKey, token, 'PX', config.RECONCILE_INTERVAL_MS * 3, 'NX');
    if (got !== 'OK') return;
    try {
      const r = await reconcileOnce(deps, registry, config.RECONCILE_GRACE_MS);
      if (r.requeued.length) log.warn({ requeued: r.requeued.length, checked: r.checked }, 'reconciler re-enqueued jobs missing from Redis');
    } finally {
      // Release only our own lock.
      await redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0", 1, lockKey, token);
    }
  };

  const timer = setInterval(() => {
    if (stopped) return;
    running = running.then(tick).catch((err) => log.error({ err }, 'reconciler pass failed'));
  }, config.RECONCILE_INTERVAL_MS);
  timer.unref();

  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
