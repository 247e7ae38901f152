// Wraps each job type's processor: ledger state, live events, error codes, cancellation.
import type { Services } from '../services.js';
import { UnrecoverableError, type Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import * as ledger from '../db/jobs.js';
import type { JobRow } from '../db/types.js';
import { publishJobEvents, type JobEventKind } from '../events.js';
import { prettyLogs } from '../log.js';
import { instrumentWorker } from '../metrics.js';
import { enqueueWebhook } from '../webhooks/delivery.js';
import { startWebhookWorker } from '../webhooks/worker.js';
import {
  CANCELLED,
  Cancelled,
  ERROR_CODE,
  errorOf,
  isDbUnavailable,
  isPermanent,
  isStallFailure,
  permanentFailure,
  Superseded,
} from '../errors.js';
import { startAdmitter } from './admitter.js';
import { DbGuard } from './db-guard.js';
import { jobLogWriter } from './job-log.js';
import { writeBehind } from './write-behind.js';
import { groupCommit } from '../group-commit.js';
import { genOf, type BullData } from '../jobs/enqueue.js';
import { timeLimits, type JobDefinition } from '../jobs/types.js';
import { keys } from '../queues/keys.js';
import { createWorker } from '../queues/index.js';
import { createRedis, type RedisClient } from '../queues/redis.js';
import { tagJobSpan } from '../tracing/index.js';
import { startTimeLimit } from './time-limit.js';

/**
 * An AbortController made only when a processor reads its signal: most runs never do, and two controllers per job
 * were a measurable share of the runtime's CPU (docs/performance.md).
 */
class LazyAbort {
  private controller: AbortController | undefined;
  private reason: unknown;
  aborted = false;

  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }
}

/** How long a run of a `startBehind` type may go before its start is written on its own (see run()). */
const START_BEHIND_MS = 50;

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

export async function startWorkers(deps: Services, queueNames: readonly string[]): Promise<RunningWorkers> {
  const { config, db, redis, log, registry } = deps;
  // One line per finished job at a terminal; in production per job at debug: an info line per job is a write(2) per
  // job, a cost that shows at thousands of jobs a second. Counts and durations are in the metrics.
  const doneLevel = prettyLogs(config) ? 'info' : 'debug';
  const workers: Worker[] = [];
  const dbGuard = new DbGuard(db, log);
  const runLogFor = jobLogWriter(db, log);
  // Runs that start or finish together (concurrency > 1) share one statement, starts and finishes alike: a round trip
  // and a commit per batch, not per job. Nothing waits for a batch to fill; a lone job goes out at once. One write in
  // flight at a time: the others gather behind it into the next batch. Each batch's events follow its commit in one
  // Redis round trip, so a row is in the ledger before anyone hears of it.
  // Both are fenced on the run's generation inside the same statement (ledger.RunRef).
  type Transition = (ledger.RunRef & { done?: false }) | (ledger.RunRef & { done: true; result: unknown });
  const transition = groupCommit(
    async (items: Transition[]) => {
      const starts: ledger.RunRef[] = [];
      const finishes: (ledger.RunRef & { result: unknown })[] = [];
      for (const t of items) {
        if (t.done) finishes.push({ id: t.id, gen: t.gen, result: t.result });
        else starts.push({ id: t.id, gen: t.gen });
      }
      const { running, succeeded } = await ledger.markRunningAndSucceededMany(db, starts, finishes);
      let r = 0;
      let s = 0;
      const rows = items.map((t) => (t.done ? succeeded[s++] : running[r++]));
      // Sent, not awaited: the next batch need not wait for Redis. Commands on one connection keep their order, so a
      // row's later events (progress, its end) still follow this one.
      publishJobEvents(
        redis,
        config,
        rows.filter((row): row is JobRow => row !== undefined).map((row) => ({ kind: 'state' as const, row })),
      ).catch((err) => log.warn({ err }, 'job events not published'));
      return rows;
    },
    // A result the database refuses (a NUL in a string) fails its own job only, not the batch it came with. Two
    // statements in flight: runs that start while one commits go out at once rather than a whole commit later.
    { maxInFlight: 2, isolate: (err) => !isDbUnavailable(err) },
  );
  const markRunning = (run: ledger.RunRef) => transition(run);

  // A run's finish is written behind (./write-behind.ts): BullMQ hears of the end at once, the ledger a batch later.
  // What follows the commit (a webhook, the end's log line) follows it here; the 'succeeded' event went with the batch.
  const finishes = writeBehind<{ jlog: () => Logger; started: number; type: string }>({
    write: (f) => transition({ id: f.id, gen: f.gen, done: true, result: f.result }),
    async committed(f, done) {
      const jlog = f.context.jlog;
      if (!done) jlog().info('job finished, but the ledger no longer holds this run; its result is dropped');
      if (done?.callback_url) await webhook(done);
      if (done?.state === 'cancelled') jlog().info('job cancelled (cancel committed while it ran)');
      else if (done && log.isLevelEnabled(doneLevel)) {
        const ms = Date.now() - f.context.started;
        jlog()[doneLevel]({ job_id: f.id, ms }, `${f.context.type} job succeeded in ${ms} ms`);
      }
    },
    async refused(f, err) {
      // The database will never take this result (a NUL in a string): the run ends failed, saying why. BullMQ has
      // it completed already, so there is no retry to wait for.
      const error = errorOf(err);
      f.context.jlog().warn({ err: error }, 'job failed: the ledger refused its result');
      try {
        await emit('state', await ledger.failRun(db, f, error, true));
      } catch (e) {
        log.error({ err: e, job_id: f.id }, 'ledger write failed');
      }
    },
    unavailable: (err) => dbGuard.outage(err),
    delayMs: config.LEDGER_WRITE_BEHIND_MS,
    retryMs: 500,
  });

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

  // Runs of this process by job id, told when BullMQ reports their lock could not be renewed (ctx.lockLost).
  const lockWatch = new Map<string, Set<LazyAbort>>();

  async function run(
    def: JobDefinition,
    job: Job<BullData>,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ) {
    const id = job.id!;
    // The run's identity: every ledger write below is fenced on it (where generation = gen).
    const run: ledger.RunRef = { id, gen: genOf(job.data) };
    // A child logger per job costs an allocation and a serialisation of its bindings: made only when something logs.
    let child: Logger | undefined;
    const jlog = () => (child ??= log.child({ job_id: id, type: def.type, tenant: job.data?.tenant, gen: run.gen }));
    // The start: committed before the processor runs (its row brings the payload, and says whether to run at all), or
    // for a type that declares `startBehind` held back: a run that ends within START_BEHIND_MS writes its start and
    // finish as one (queued → succeeded, one row write, one event), a longer one sends its start then. Whatever the run
    // writes later (progress, its end) waits for the start's commit, so it never lands before the start.
    let startCommitted: Promise<unknown> = Promise.resolve();
    let startTimer: NodeJS.Timeout | undefined;
    // The ledger's attempt count as this run's start left it: its failure is fenced on it (ledger.failRun).
    let attempt: number | undefined;
    // A start PostgreSQL refuses (an outage) is not retried: the finish, written behind and retried, settles the row.
    const sendStart = () => {
      if (startTimer === undefined) return startCommitted;
      clearTimeout(startTimer);
      startTimer = undefined;
      startCommitted = markRunning(run).then(
        (r) => (attempt = r?.attempts),
        () => undefined,
      );
      return startCommitted;
    };
    let row: Pick<JobRow, 'tenant' | 'attempts' | 'generation' | 'max_attempts' | 'payload' | 'timeout_ms'> | undefined;
    if (def.startBehind && job.data.payload !== undefined) {
      startTimer = setTimeout(sendStart, START_BEHIND_MS);
      row = {
        tenant: job.data.tenant,
        attempts: job.attemptsMade + 1,
        generation: run.gen,
        max_attempts: job.opts.attempts ?? 1,
        payload: job.data.payload,
        // A startBehind type's own default limit (its BullMQ data carries no ledger row).
        timeout_ms: null,
      };
    } else {
      const started = await markRunning(run);
      if (started && started.state !== 'running') {
        // Not started by its expires_at: the start write ended it instead (ledger.startRuns), its event went with the
        // batch.
        if (started.callback_url) await webhook(started);
        jlog().info('job expired before it started');
        throw new Cancelled();
      }
      row = started;
      attempt = started?.attempts;
    }
    if (!row) {
      // Terminal, cancelled before it started, unknown to the ledger, or of an older generation than the ledger's:
      // nothing to do, and no retry. An older generation touches nothing; BullMQ's outcome of it is ignored too.
      const current = await ledger.findJob(db, id);
      if (current && current.generation !== run.gen) {
        jlog().info({ ledger_gen: current.generation }, 'job skipped: superseded by a newer generation');
        return null;
      }
      if (current?.cancel_requested && !ledger.TERMINAL.includes(current.state)) {
        await emit('state', await ledger.markCancelled(db, id, ledger.LIVE, run.gen));
      }
      jlog().info({ state: current?.state ?? 'unknown' }, 'job skipped: not runnable');
      return current?.result ?? null;
    }
    tagJobSpan({ id, type: def.type, attempt: row.attempts, generation: row.generation });
    // Its 'running' event went out with the batch; a webhook is for ends only.
    const controller = new LazyAbort();
    // Why the run is stopping: a cancel (the message, or the ledger's flag read at a progress write), or the ledger no
    // longer holding this run.
    let superseded = false;
    const abort = () => controller.abort(signal?.reason ?? new Error(CANCELLED));
    if (signal?.aborted) abort();
    signal?.addEventListener('abort', abort, { once: true });
    const lockLost = new LazyAbort();
    const watching = lockWatch.get(id) ?? new Set();
    lockWatch.set(id, watching.add(lockLost));
    const started = Date.now();
    const runLog = runLogFor(id, row.generation);
    const limit = startTimeLimit({
      db,
      job,
      run,
      ms: row.timeout_ms ?? timeLimits(def).defaultMs,
      graceMs: config.JOB_TIMEOUT_GRACE_MS,
      controller,
      lockLost: lockLost.signal,
      beforeAbandon: runLog.flush,
      log: jlog,
    });
    let progressDone = async () => {};
    if (log.isLevelEnabled('debug')) jlog().debug({ attempt: row.attempts }, 'job started');
    try {
      const payload = def.payload.parse(row.payload);
      let lastProgress = -1;
      // Concurrent reports (an email run sends on several connections) would otherwise race to the ledger, and a
      // slower write of 20% could land after 30%.
      // The progress write also reads the ledger's cancel flag (same statement): a cancel whose message this worker
      // missed still stops the run at its next progress report.
      const progressWrites = latestInOrder(async (p) => {
        await sendStart();
        await job.updateProgress(p);
        const now = await ledger.setProgress(db, run, p);
        if (!now) {
          superseded = true;
          controller.abort(new Superseded());
          return;
        }
        if (now.cancel_requested) controller.abort(new Error(CANCELLED));
        await emit('progress', now);
      });
      progressDone = progressWrites.settled;
      const work = def.process!({
        id,
        tenant: row.tenant,
        type: def.type,
        payload,
        attempt: row.attempts,
        gen: row.generation,
        maxAttempts: row.max_attempts,
        get signal() {
          return controller.signal;
        },
        get lockLost() {
          return lockLost.signal;
        },
        get log() {
          return jlog();
        },
        jobLog: runLog.line,
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
      const result = await limit.race(work);
      // A progress event never follows the run's end, nor does a log line: the progress writes are awaited here (one
      // can still stop the run), the log lines' write by the finish's (below) rather than by BullMQ's.
      await progressDone();
      const logged = runLog.flush();
      if (controller.aborted) throw limit.timedOut() ? limit.error : new Cancelled();
      // Written behind: BullMQ records the result now, the ledger with the next batch. The finish reads the cancel flag
      // too: a cancel committed while the run went on ends the row cancelled (the ledger's word wins over BullMQ's).
      if (startTimer !== undefined) {
        // Ended before its start went out: one write counts the run and ends it (ledger.markSucceededMany).
        clearTimeout(startTimer);
        startTimer = undefined;
      }
      finishes.add(
        { ...run, result, context: { jlog, started, type: def.type } },
        Promise.all([startCommitted, logged]),
      );
      return result;
    } catch (err) {
      await sendStart();
      await progressDone();
      await runLog.flush();
      // A run this process abandoned past its time limit bumped the generation itself: its end is written below.
      if (superseded && !limit.abandoned) {
        jlog().info('job stopped: the ledger no longer holds this run');
        throw new Superseded();
      }
      if (lockLost.aborted && (!controller.aborted || limit.timedOut())) {
        // BullMQ could not renew this run's lock, so it hands the job to another run of the same generation, which
        // owns the ledger row from then on: this run's failure must not set that row back to delayed or failed.
        jlog().warn({ err: errorOf(err) }, 'job stopped: its lock was lost; BullMQ runs it again');
        throw err;
      }
      if (controller.aborted && !limit.timedOut()) {
        await emit('state', await ledger.markCancelled(db, id, ledger.LIVE, run.gen));
        jlog().info('job cancelled');
        throw new Cancelled();
      }
      // Past its time limit a run fails with the timeout, whatever its processor threw on the way out.
      const failure = limit.timedOut() ? limit.error : err;
      const error = errorOf(failure);
      const final = isPermanent(failure) || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const end = limit.end === run ? { ...run, attempt } : limit.end;
      // A cancel committed while the run went on wins over its failure (the row ends cancelled, no retry).
      const failed = await ledger.failRun(db, end, error, final);
      await emit('state', failed);
      if (failed?.state === 'cancelled') {
        jlog().info('job cancelled (cancel committed while it ran)');
        throw new Cancelled();
      }
      jlog().warn(
        { err: error, final, ms: Date.now() - started },
        // Not recorded: a newer run of the job started meanwhile (this run's lock lapsed unheard), or it was queued again.
        !failed
          ? 'job attempt failed; the ledger no longer holds this run'
          : final
            ? 'job failed'
            : 'job attempt failed, will retry',
      );
      if (isPermanent(failure) && !(failure instanceof UnrecoverableError)) throw permanentFailure(error);
      throw failure;
    } finally {
      limit.clear();
      signal?.removeEventListener('abort', abort);
      watching.delete(lockLost);
      if (!watching.size) lockWatch.delete(id);
    }
  }

  for (const name of queueNames) {
    const def = registry.get(name);
    if (!def?.process) {
      log.warn({ queue: name }, 'no processor for this queue; not serving it');
      continue;
    }
    await def.start?.(deps);
    // BullMQ's `process` span per run joins the trace stored with the job (see src/jobs/enqueue.ts).
    const worker = createWorker<BullData>(
      deps,
      name,
      (job, token, signal) => dbGuard.around(() => run(def, job, token, signal)),
      {
        concurrency: config.WORKER_CONCURRENCY?.[name] ?? def.concurrency,
        limiter: typeof def.limiter === 'function' ? def.limiter(config) : def.limiter,
        // A stalled job (its worker died) is retried by another worker; a job that keeps killing workers fails.
        maxStalledCount: 2,
        lockDuration: config.WORKER_LOCK_MS,
        stalledInterval: config.WORKER_LOCK_MS,
      },
    );
    worker.on('lockRenewalFailed', (ids) => {
      for (const id of ids) for (const c of lockWatch.get(id) ?? []) c.abort(new Error('lock renewal failed'));
    });
    instrumentWorker(worker, name);
    // For the one failure BullMQ decides without our processor (a job that stalled too often): close the ledger row,
    // if it still shows that very run running. Every other failure was written by the run itself.
    worker.on('failed', (job, err) => {
      if (!job || !isStallFailure(job, err)) return;
      void ledger
        .markStalled(db, { id: job.id!, gen: genOf(job.data) }, { code: ERROR_CODE.stalled, message: err.message })
        .then((row) => emit('state', row))
        .catch((e) => log.error({ err: e, job_id: job.id }, 'ledger write failed'));
    });
    dbGuard.watch(worker);
    workers.push(worker);
  }
  // Webhook deliveries are served by every worker process, whatever queues it serves.
  workers.push(startWebhookWorker(deps, dbGuard));

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
  // Hands jobs waiting for their tenant's window to BullMQ (one process at a time, by a PostgreSQL advisory lock).
  const admitter = startAdmitter(deps);

  return {
    workers,
    async close(timeoutMs: number) {
      await admitter.stop();
      const closing = Date.now();
      const graceful = Promise.all(workers.map((w) => w.close()));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
      if ((await Promise.race([graceful, timeout])) === 'timeout') {
        // Jobs still running are not cancelled: their locks lapse and another worker runs them again. `close(true)`
        // here would only return the pending graceful close (BullMQ keeps one closing promise), so the connections
        // are dropped below instead: lock renewal stops with them, and the still-running processors are abandoned.
        log.warn('shutdown grace period over; leaving running jobs to be retried elsewhere');
        graceful.catch(() => undefined);
      }
      clearTimeout(timer);
      // The finishes written behind commit before the connections go; whatever PostgreSQL does not take in the rest
      // of the grace period stays in BullMQ's completed jobs, for the reconciler.
      const left = Math.max(1_000, timeoutMs - (Date.now() - closing));
      if (!(await finishes.drain(left)))
        log.warn({ pending: finishes.pending }, 'shutdown: ledger finishes not committed; the reconciler settles them');
      // BullMQ leaves a connection it was given open on close: drop each worker's, so nothing keeps the process alive.
      await Promise.all(workers.map((w) => w.disconnect().catch(() => undefined)));
      await Promise.all(workers.map((w) => registry.get(w.name)?.stop?.(deps)));
      dbGuard.stop();
      subscriber.disconnect();
    },
  };
}
