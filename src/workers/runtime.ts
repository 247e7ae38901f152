// Wraps each job type's processor: ledger state, live events, error codes, cancellation.
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { ZodError } from 'zod';
import * as ledger from '../db/jobs.js';
import type { JobError, JobRow } from '../db/types.js';
import { publishJobEvents, type JobEventKind } from '../events.js';
import { prettyLogs } from '../log.js';
import { instrumentWorker } from '../metrics.js';
import { enqueueWebhook, startWebhookWorker } from '../webhooks/delivery.js';
import { isDbUnavailable } from '../db/index.js';
import { DbGuard } from './db-guard.js';
import { groupCommit } from '../group-commit.js';
import type { BullData } from '../jobs/enqueue.js';
import type { JobRegistry } from '../jobs/registry.js';
import { PermanentError, RetryableError, type JobDefinition, type WorkerDeps } from '../jobs/types.js';
import { bullPrefix, createRedis, keys, type RedisClient } from '../queues.js';

/** Thrown into BullMQ when a run ends cancelled: no retry. */
class Cancelled extends UnrecoverableError {}

export function errorOf(err: unknown): JobError {
  if (err instanceof ZodError) {
    const detail = err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    return { code: 'invalid_payload', message: detail.slice(0, 2000) };
  }
  if (err instanceof PermanentError || err instanceof RetryableError) return { code: err.code, message: err.message };
  const e = err as { code?: unknown; message?: unknown; name?: string } | null;
  const message = String(e?.message ?? err).slice(0, 2000);
  if (err instanceof UnrecoverableError) return { code: 'unrecoverable', message };
  return { code: typeof e?.code === 'string' ? e.code : 'processor_error', message };
}

/**
 * The ledger error for a failure BullMQ recorded as text (its `failedReason`): a job that stalled too often, or the
 * runtime's own "<code>: <message>" of a permanent error, or else a processor error.
 */
export function errorOfReason(reason: string): JobError {
  if (/stalled/i.test(reason)) return { code: 'stalled', message: reason.slice(0, 2000) };
  const m = /^([a-z][a-z0-9_]*): ([\s\S]*)$/.exec(reason);
  return { code: m?.[1] ?? 'processor_error', message: (m?.[2] ?? reason).slice(0, 2000) };
}

function isPermanent(err: unknown): boolean {
  return err instanceof PermanentError || err instanceof ZodError || err instanceof UnrecoverableError;
}

/**
 * Writes of one changing value (a run's progress), one at a time and in order, so a slower write never lands after a
 * newer one.
 * A value reported while a write is under way waits for it, and a newer value reported meanwhile replaces it: only the
 * latest is written next. Each call resolves (or rejects) with the write that carries its value or a newer one.
 */
export function latestInOrder(write: (value: number) => Promise<void>) {
  let tail: Promise<void> = Promise.resolve();
  let waiting: { value: number; done: Promise<void> } | undefined;
  const report = (value: number): Promise<void> => {
    if (waiting) {
      waiting.value = value;
      return waiting.done;
    }
    const slot: { value: number; done: Promise<void> } = { value, done: tail };
    slot.done = tail
      .catch(() => undefined)
      .then(() => {
        waiting = undefined;
        return write(slot.value);
      });
    waiting = slot;
    tail = slot.done;
    return slot.done;
  };
  /** Resolves once every write reported so far has ended, failed or not. */
  const settled = () => tail.catch(() => undefined);
  return { report, settled };
}

export interface RunningWorkers {
  workers: Worker[];
  /** Stops taking jobs, lets running ones finish (up to the timeout), then closes connections. */
  close(timeoutMs: number): Promise<void>;
}

export async function startWorkers(
  deps: WorkerDeps,
  registry: JobRegistry,
  queueNames: readonly string[],
): Promise<RunningWorkers> {
  const { config, db, redis, log } = deps;
  // One line per finished job at a terminal; in production per job at debug: an info line per job is a write(2) per
  // job, a cost that shows at thousands of jobs a second. Counts and durations are in the metrics.
  const doneLevel = prettyLogs(config) ? 'info' : 'debug';
  const workers: Worker[] = [];
  const dbGuard = new DbGuard(db, log);
  // Runs that start or finish together (concurrency > 1) share one statement, starts and finishes alike: a round trip
  // and a commit per batch, not per job. Nothing waits for a batch to fill; a lone job goes out at once. One write in
  // flight at a time: the others gather behind it into the next batch. Each batch's events follow its commit in one
  // Redis round trip, so a row is in the ledger before anyone hears of it.
  type Transition = { id: string; done?: false } | { id: string; done: true; result: unknown };
  const transition = groupCommit(
    async (items: Transition[]) => {
      const starts: string[] = [];
      const finishes: { id: string; result: unknown }[] = [];
      for (const t of items) {
        if (t.done) finishes.push({ id: t.id, result: t.result });
        else starts.push(t.id);
      }
      const { running, succeeded } = await ledger.markRunningAndSucceededMany(db, starts, finishes);
      let r = 0;
      let s = 0;
      const rows = items.map((t) => (t.done ? succeeded[s++] : running[r++]));
      await publishJobEvents(
        redis,
        config,
        rows.filter((row): row is JobRow => row !== undefined).map((row) => ({ kind: 'state' as const, row })),
      );
      return rows;
    },
    // A result the database refuses (a NUL in a string) fails its own job only, not the batch it came with.
    { maxInFlight: 1, isolate: (err) => !isDbUnavailable(err) },
  );
  const markRunning = (id: string) => transition({ id });
  const markSucceeded = (id: string, result: unknown) => transition({ id, done: true, result });

  // Other events (progress, failures, cancellations) published together share one round trip too, in order. Each
  // caller awaits its own ledger write first, so an event never runs ahead of its row.
  const publish = groupCommit(
    async (events: { kind: JobEventKind; row: JobRow }[]) => {
      await publishJobEvents(redis, config, events);
      return events;
    },
    { maxInFlight: 1 },
  );

  // A job with a callback that has just ended: its webhook goes on the `webhooks` queue.
  async function webhook(row: JobRow) {
    await enqueueWebhook(deps.queues, config, row).catch((err) =>
      log.error({ err, job_id: row.id }, 'webhook enqueue failed'),
    );
  }

  async function emit(kind: JobEventKind, row: JobRow | undefined) {
    if (row) await publish({ kind, row });
    if (kind === 'state' && row?.callback_url) await webhook(row);
  }

  async function run(
    def: JobDefinition,
    job: Job<BullData>,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ) {
    const id = job.id!;
    // A child logger per job costs an allocation and a serialisation of its bindings: made only when something logs.
    let child: Logger | undefined;
    const jlog = () => (child ??= log.child({ job_id: id, type: def.type, tenant: job.data?.tenant }));
    const row = await markRunning(id);
    if (!row) {
      // Terminal, cancelled before it started, or unknown to the ledger: nothing to do, and no retry.
      const current = await ledger.findJob(db, id);
      if (current?.cancel_requested && !ledger.TERMINAL.includes(current.state)) {
        await emit('state', await ledger.markCancelled(db, id));
      }
      jlog().info({ state: current?.state ?? 'unknown' }, 'job skipped: not runnable');
      return current?.result ?? null;
    }
    // Its 'running' event went out with the batch; a webhook is for ends only.
    const controller = new AbortController();
    const abort = () => controller.abort(signal?.reason ?? new Error('cancelled'));
    if (signal?.aborted) abort();
    signal?.addEventListener('abort', abort, { once: true });
    const started = Date.now();
    let progressDone = async () => {};
    if (log.isLevelEnabled('debug')) jlog().debug({ attempt: row.attempts }, 'job started');
    try {
      const payload = def.payload.parse(row.payload);
      let lastProgress = -1;
      // Concurrent reports (an email run sends on several connections) would otherwise race to the ledger, and a
      // slower write of 20% could land after 30%.
      const progressWrites = latestInOrder(async (p) => {
        await job.updateProgress(p);
        await emit('progress', await ledger.setProgress(db, id, p));
      });
      progressDone = progressWrites.settled;
      const result = await def.process!({
        id,
        tenant: row.tenant,
        type: def.type,
        payload,
        attempt: row.attempts,
        gen: row.generation,
        maxAttempts: row.max_attempts,
        signal: controller.signal,
        get log() {
          return jlog();
        },
        deps,
        bull: job,
        token,
        async progress(percent: number) {
          const p = Math.max(0, Math.min(100, Math.round(percent)));
          if (p === lastProgress) return;
          lastProgress = p;
          await progressWrites.report(p);
        },
      });
      if (controller.signal.aborted) throw new Cancelled('cancelled');
      // A progress event never follows the run's end.
      await progressDone();
      const done = await markSucceeded(id, result);
      if (done?.callback_url) await webhook(done);
      if (log.isLevelEnabled(doneLevel)) {
        const ms = Date.now() - started;
        jlog()[doneLevel]({ job_id: id, ms }, `${def.type} job succeeded in ${ms} ms`);
      }
      return result;
    } catch (err) {
      await progressDone();
      if (controller.signal.aborted) {
        await emit('state', await ledger.markCancelled(db, id));
        jlog().info('job cancelled');
        throw new Cancelled('cancelled');
      }
      const error = errorOf(err);
      const final = isPermanent(err) || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      await emit('state', await ledger.markFailed(db, id, error, final));
      jlog().warn(
        { err: error, final, ms: Date.now() - started },
        final ? 'job failed' : 'job attempt failed, will retry',
      );
      if (isPermanent(err) && !(err instanceof UnrecoverableError))
        throw new UnrecoverableError(`${error.code}: ${error.message}`);
      throw err;
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }

  for (const name of queueNames) {
    const def = registry.get(name);
    if (!def?.process) {
      log.warn({ queue: name }, 'no processor for this queue; not serving it');
      continue;
    }
    await def.start?.(deps);
    const worker = new Worker<BullData>(
      name,
      (job, token, signal) => dbGuard.around(() => run(def, job, token, signal)),
      {
        connection: createRedis(config, 'worker'),
        prefix: bullPrefix(config, name),
        concurrency: config.WORKER_CONCURRENCY?.[name] ?? def.concurrency,
        limiter: typeof def.limiter === 'function' ? def.limiter(config) : def.limiter,
        // A stalled job (its worker died) is retried by another worker; a job that keeps killing workers fails.
        maxStalledCount: 2,
        lockDuration: config.WORKER_LOCK_MS,
        stalledInterval: config.WORKER_LOCK_MS,
      },
    );
    worker.on('error', (err) => log.error({ err, queue: name }, 'worker error'));
    instrumentWorker(worker, name);
    // Safety net for failures BullMQ decides without our processor (too many stalls): close the ledger row.
    worker.on('failed', (job, err) => {
      const stalled = /stalled/i.test(err.message);
      if (!job || (!stalled && job.attemptsMade < (job.opts.attempts ?? 1))) return;
      void ledger
        .markFailed(db, job.id!, errorOfReason(err.message), true)
        .then((row) => emit('state', row))
        .catch((e) => log.error({ err: e, job_id: job.id }, 'ledger write failed'));
    });
    dbGuard.watch(worker);
    workers.push(worker);
  }
  // Webhook deliveries are served by every worker process, whatever queues it serves.
  workers.push(startWebhookWorker(deps));

  // Cancellation of running jobs: the API publishes the id; whichever worker holds it aborts the processor.
  const subscriber: RedisClient = createRedis(config, 'subscriber');
  const cancelChannel = keys(config).cancel;
  subscriber.on('message', (channel: string, id: string) => {
    if (channel !== cancelChannel) return;
    for (const w of workers) w.cancelJob(id, 'cancelled by request');
  });
  subscriber.on('error', () => {});
  await subscriber.subscribe(cancelChannel);

  await Promise.all(workers.map((w) => w.waitUntilReady()));

  return {
    workers,
    async close(timeoutMs: number) {
      const graceful = Promise.all(workers.map((w) => w.close()));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
      if ((await Promise.race([graceful, timeout])) === 'timeout') {
        // Jobs still running are not cancelled: their locks lapse and another worker runs them again.
        log.warn('shutdown grace period over; leaving running jobs to be retried elsewhere');
        await Promise.all(workers.map((w) => w.close(true)));
      }
      clearTimeout(timer);
      await Promise.all(workers.map((w) => registry.get(w.name)?.stop?.(deps)));
      dbGuard.stop();
      subscriber.disconnect();
    },
  };
}
