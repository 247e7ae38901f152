// Scheduled runs. A definition lives in PostgreSQL (`schedules`); a BullMQ job scheduler of the same name on the
// internal `schedules` queue fires its ticks. Every worker process serves that queue, and BullMQ hands each tick to
// exactly one of them, whose processor turns it into an ordinary ledger job via submit(). The tick's id (BullMQ's
// deterministic `repeat:<name>:<millis>`) is the ledger job's idempotency key, so a tick run twice (a worker died
// after submitting) still makes one job.
import type { Services } from '../services.js';
import type { Worker, Job } from 'bullmq';
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import type { Db } from '../db/index.js';
import { findByIdempotencyKey } from '../db/jobs.js';
import { findSchedule, listSchedules, saveSchedule } from '../db/schedules.js';
import type { ScheduleRow } from '../db/types.js';
import type { JobRegistry } from '../jobs/registry.js';
import { checkSpec, priority, submit } from '../jobs/submit.js';
import type { Config } from '../config.js';
import { recordAudit } from '../db/audit.js';
import { createWorker, Queues } from '../queues/index.js';
import { createRedis, waitForRedis } from '../queues/redis.js';

export const SCHEDULES_QUEUE = 'schedules';
export const SCHEDULE_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const DAY = 86_400_000;

export const scheduleSpec = z.strictObject({
  type: z.string().min(1).max(40),
  payload: z.record(z.string(), z.unknown()),
  priority: priority.default('normal'),
  cron: z.string().trim().min(1).max(200).optional(),
  every_ms: z
    .number()
    .int()
    .min(1_000)
    .max(366 * DAY)
    .optional(),
  tz: z.string().min(1).max(64).optional(),
  /** Whose jobs the runs are; defaults to the operator's own tenant. */
  tenant: z.string().min(1).max(63).optional(),
});
export type ScheduleSpec = z.infer<typeof scheduleSpec>;

export interface ScheduleIssue {
  path: string;
  message: string;
}

/** Checks the rule (cron with tz, or every_ms) and the job it makes (against the registry, as a submission would be). */
export function checkSchedule(
  registry: JobRegistry,
  spec: ScheduleSpec,
): { issues: ScheduleIssue[]; unavailable: boolean; payload?: unknown } {
  const issues: ScheduleIssue[] = [];
  if ((spec.cron === undefined) === (spec.every_ms === undefined)) {
    issues.push({ path: 'cron', message: 'give exactly one of cron or every_ms' });
  }
  if (spec.tz !== undefined) {
    if (spec.cron === undefined) issues.push({ path: 'tz', message: 'tz applies to cron schedules only' });
    try {
      new Intl.DateTimeFormat('en', { timeZone: spec.tz });
    } catch {
      issues.push({ path: 'tz', message: `'${spec.tz}' is not an IANA time zone (e.g. Europe/Paris, UTC)` });
    }
  }
  if (spec.cron !== undefined && !issues.some((i) => i.path === 'tz')) {
    try {
      CronExpressionParser.parse(spec.cron, { tz: spec.tz, strict: false });
    } catch (err) {
      issues.push({
        path: 'cron',
        message: `'${spec.cron}' is not a valid cron expression: ${(err as Error).message}`,
      });
    }
  }
  const checked = checkSpec(registry, { type: spec.type, payload: spec.payload, priority: spec.priority });
  for (const i of checked.issues) issues.push({ path: i.path.join('.'), message: i.message });
  const unavailable = checked.issues.some((i) => i.code === 'unavailable');
  return { issues, unavailable, payload: checked.row ? JSON.parse(checked.row.payload as string) : undefined };
}

// ── BullMQ job schedulers ───────────────────────────────────────────────────

interface TickData {
  schedule: string;
}

export async function installScheduler(queues: Queues, s: ScheduleRow): Promise<void> {
  await queues
    .get(SCHEDULES_QUEUE)
    .upsertJobScheduler(s.name, s.cron ? { pattern: s.cron, tz: s.tz ?? undefined } : { every: Number(s.every_ms) }, {
      name: 'tick',
      data: { schedule: s.name } satisfies TickData,
      // A tick retries only while PostgreSQL or Redis are unreachable; the ledger job it makes has its own attempts.
      opts: {
        attempts: 5,
        backoff: { type: 'exponential', delay: 1_000 },
        removeOnComplete: { count: 200 },
        removeOnFail: { count: 1_000 },
      },
    });
}

export async function uninstallScheduler(queues: Queues, name: string): Promise<void> {
  await queues.get(SCHEDULES_QUEUE).removeJobScheduler(name);
}

/** When each schedule next fires, from BullMQ. */
export async function nextRuns(queues: Queues): Promise<Map<string, number | undefined>> {
  const list = await queues.get(SCHEDULES_QUEUE).getJobSchedulers(0, -1, true);
  return new Map(list.map((j) => [j.key, j.next]));
}

/**
 * Makes Redis match PostgreSQL: installs missing or changed schedulers, removes ones no longer defined. Heals a PUT
 * whose Redis half failed and a Redis that lost its data. Idempotent: an upsert replaces the pending tick, never adds one.
 */
export async function syncSchedulers(db: Db, queues: Queues): Promise<{ installed: string[]; removed: string[] }> {
  const rows = await listSchedules(db);
  const queue = queues.get(SCHEDULES_QUEUE);
  const current = new Map((await queue.getJobSchedulers(0, -1)).map((j) => [j.key, j]));
  const installed: string[] = [];
  const removed: string[] = [];
  for (const s of rows) {
    const j = current.get(s.name);
    const same =
      j &&
      (j.pattern ?? null) === s.cron &&
      (j.every === undefined ? null : Number(j.every)) === (s.every_ms === null ? null : Number(s.every_ms)) &&
      (j.tz ?? null) === s.tz;
    if (!same) {
      await installScheduler(queues, s);
      installed.push(s.name);
    }
  }
  const names = new Set(rows.map((r) => r.name));
  for (const key of current.keys()) {
    if (!names.has(key)) {
      await queue.removeJobScheduler(key);
      removed.push(key);
    }
  }
  return { installed, removed };
}

// ── The tick processor, run in every worker process ─────────────────────────

async function runTick(deps: Services, job: Job<TickData>): Promise<{ job_id?: string; skipped?: string }> {
  const name = job.data.schedule;
  const log = deps.log.child({ schedule: name, tick: job.id });
  const s = await findSchedule(deps.db, name);
  if (!s) {
    log.info('schedule no longer defined; tick skipped');
    return { skipped: 'deleted' };
  }
  const { row, issues } = checkSpec(deps.registry, {
    type: s.type,
    payload: s.payload as Record<string, unknown>,
    priority: s.priority,
  });
  if (!row) {
    // A definition that was valid when saved but not now (a job type changed): nothing to retry.
    log.error({ issues, type: s.type, tenant: s.tenant }, 'schedule definition no longer valid; tick skipped');
    return { skipped: 'invalid' };
  }
  const key = `schedule:${job.id}`;
  try {
    const [created] = await submit(deps, s.tenant, [row], { idempotency_key: key });
    log.info({ job_id: created.id, type: s.type, tenant: s.tenant }, 'scheduled run submitted');
    return { job_id: created.id };
  } catch (err) {
    // This tick already made its job (an earlier run of it died before completing).
    if ((err as { code?: string }).code !== '23505') throw err;
    const first = await findByIdempotencyKey(deps.db, s.tenant, key);
    log.info({ job_id: first?.id, type: s.type, tenant: s.tenant }, 'scheduled run already submitted for this tick');
    return { job_id: first?.id };
  }
}

/** Serves the schedules queue in this process and keeps Redis's schedulers in line with PostgreSQL. */
export async function startScheduleWorker(
  deps: Services,
  syncEveryMs = 60_000,
): Promise<{ worker: Worker; close(): Promise<void> }> {
  const { config, log } = deps;
  const sync = () =>
    syncSchedulers(deps.db, deps.queues)
      .then((r) => {
        if (r.installed.length || r.removed.length) log.info(r, 'schedules synced to Redis');
      })
      .catch((err) => log.warn({ err: (err as Error).message }, 'schedule sync failed; will try again'));
  await sync();
  const worker = createWorker<TickData>(deps, SCHEDULES_QUEUE, (job) => runTick(deps, job), {
    concurrency: 2,
    lockDuration: config.WORKER_LOCK_MS,
    stalledInterval: config.WORKER_LOCK_MS,
  });
  worker.on('failed', (job, err) =>
    log.warn({ err: err.message, schedule: job?.data.schedule, tick: job?.id }, 'schedule tick failed'),
  );
  const timer = setInterval(() => void sync(), syncEveryMs);
  timer.unref();
  await worker.waitUntilReady();
  return {
    worker,
    async close() {
      clearInterval(timer);
      await worker.close();
    },
  };
}

// ── Demo schedules (cli seed --demo) ────────────────────────────────────────

const DEMO_SCHEDULES: (ScheduleSpec & { name: string })[] = [
  {
    name: 'nightly-recommendations',
    type: 'recommendations',
    payload: { all_users: true },
    priority: 'low',
    cron: '0 2 * * *',
    tz: 'UTC',
  },
  {
    name: 'daily-operations-report',
    type: 'report',
    payload: { kind: 'jobs', format: 'pdf', scope: 'all', notify: ['operators@example.com'] },
    priority: 'normal',
    cron: '0 6 * * *',
    tz: 'UTC',
  },
];

/**
 * Saves the demo schedules for `tenant` and installs their schedulers. With Redis down the rows are still saved:
 * the workers' sync installs them when they start.
 */
export async function installDemoSchedules(
  config: Config,
  db: Db,
  registry: JobRegistry,
  tenant: string,
): Promise<string[]> {
  const rows: ScheduleRow[] = [];
  for (const { name, ...spec } of DEMO_SCHEDULES) {
    const { issues, payload } = checkSchedule(registry, spec);
    if (issues.length)
      throw new Error(`demo schedule ${name}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    const { row } = await saveSchedule(db, {
      name,
      tenant,
      type: spec.type,
      payload,
      priority: spec.priority,
      cron: spec.cron ?? null,
      every_ms: spec.every_ms ?? null,
      tz: spec.tz ?? null,
    });
    await recordAudit(db, {
      actor: undefined,
      action: 'schedule.create',
      target_kind: 'schedule',
      target: name,
      detail: { ...spec, source: 'seed --demo' },
      surface: 'cli',
    });
    rows.push(row);
  }
  const redis = createRedis(config, 'producer');
  redis.on('error', () => {});
  const queues = new Queues(config, redis);
  try {
    await waitForRedis(redis);
    for (const row of rows) await installScheduler(queues, row);
  } catch {
    // Left to the workers' sync.
  } finally {
    await queues.close();
    redis.disconnect();
  }
  return rows.map((r) => r.name);
}
