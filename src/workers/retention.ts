// Retention passes: old finished jobs (with their timelines, logs and deliveries) and old audit entries are deleted
// in batches of RETENTION_BATCH with a pause between statements, so no statement runs long and no lock is held long.
// One pass at a time across every worker process (a PostgreSQL advisory lock, released by PostgreSQL if the process
// dies). What goes and what stays: src/db/retention.ts.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Db } from '../db/index.js';
import { type PrunedJobs, pruneAuditBatch, pruneJobsBatch, withRetentionLock } from '../db/retention.js';
import { retentionPruned } from '../metrics.js';
import { every, type Service } from './periodic.js';

export interface RetentionOptions {
  /** Finished jobs older than this many days go; 0 keeps them. */
  jobDays: number;
  /** Audit entries older than this many days go; 0 keeps them. */
  auditDays: number;
  batch: number;
  pauseMs: number;
  /** Told after each statement that deleted something (tests observe batches through it). */
  onBatch?: (kind: 'jobs' | 'audit_log', deleted: number) => void | Promise<void>;
  /** Asked between batches: true stops the pass there. */
  stopped?: () => boolean;
}

export interface PruneResult {
  /** Statements that deleted jobs, and audit entries. */
  batches: { jobs: number; audit_log: number };
  deleted: PrunedJobs & { audit_log: number };
}

export function retentionOptions(config: Config): RetentionOptions {
  return {
    jobDays: config.JOB_RETENTION_DAYS,
    auditDays: config.AUDIT_RETENTION_DAYS,
    batch: config.RETENTION_BATCH,
    pauseMs: config.RETENTION_PAUSE_MS,
  };
}

/**
 * Between statements: at least `pauseMs`, and at least as long as the statement took, so a pass keeps the database
 * busy at most about half the time, and backs off by itself when the database is loaded (its statements slow down).
 */
function pause(opts: RetentionOptions, since: number): Promise<void> {
  return sleep(Math.max(opts.pauseMs, performance.now() - since));
}

/** One pass now; undefined when another process's pass holds the lock. */
export async function pruneOnce(db: Db, opts: RetentionOptions): Promise<PruneResult | undefined> {
  return withRetentionLock(db, async (conn) => {
    const result: PruneResult = {
      batches: { jobs: 0, audit_log: 0 },
      deleted: { jobs: 0, job_events: 0, job_logs: 0, email_deliveries: 0, webhook_deliveries: 0, audit_log: 0 },
    };
    const stop = () => opts.stopped?.() ?? false;
    // Until a batch finds nothing: a parent whose children went in one batch is taken by the next.
    while (opts.jobDays > 0 && !stop()) {
      const t0 = performance.now();
      const n = await pruneJobsBatch(conn, opts.jobDays, opts.batch);
      if (n.jobs === 0) break;
      result.batches.jobs++;
      for (const [table, count] of Object.entries(n) as [keyof PrunedJobs, number][]) {
        result.deleted[table] += count;
        if (count) retentionPruned.inc({ table }, count);
      }
      await opts.onBatch?.('jobs', n.jobs);
      await pause(opts, t0);
    }
    while (opts.auditDays > 0 && !stop()) {
      const t0 = performance.now();
      const n = await pruneAuditBatch(conn, opts.auditDays, opts.batch);
      if (n === 0) break;
      result.batches.audit_log++;
      result.deleted.audit_log += n;
      retentionPruned.inc({ table: 'audit_log' }, n);
      await opts.onBatch?.('audit_log', n);
      await pause(opts, t0);
    }
    return result;
  });
}

/** A pass at start, then one every RETENTION_INTERVAL_MS, in each worker process; the lock keeps it to one at once. */
export function startRetention(deps: { db: Db; log: Logger; config: Config }): Service {
  const { db, log, config } = deps;
  return every({ everyMs: config.RETENTION_INTERVAL_MS, what: 'retention pass', log, now: true }, async (stopped) => {
    const r = await pruneOnce(db, { ...retentionOptions(config), stopped });
    if (r && (r.deleted.jobs || r.deleted.audit_log))
      log.info(r, 'retention: old finished jobs and audit entries deleted');
  });
}
