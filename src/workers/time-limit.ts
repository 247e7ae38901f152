// Run time limits. Past its limit a run is aborted through its signal (ctx.signal, reason a RunTimeout) and ends as a
// failure with error.code "timeout", retried by its type's policy like any other. A processor that ignores the signal
// is abandoned once a grace period has passed: the runtime stops waiting for it (so BullMQ's concurrency slot is
// freed), after queueing the job again as a new generation in the ledger and in its BullMQ data. The next attempt
// runs as that generation, and whatever the abandoned processor writes later (progress, log lines) is refused by the
// generation fence; its result, if it ever returns one, is dropped here. Email claims are owned by (job, gen,
// attempt): an abandoned email run starts no new send (its signal is aborted), a send already on the wire still
// records its real outcome, and the next attempt takes over a claim once its owner has gone silent.
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Db } from '../db/index.js';
import * as ledger from '../db/jobs.js';
import type { BullData } from '../jobs/enqueue.js';
import { RunTimeout } from '../errors.js';

export interface TimeLimitOptions {
  db: Db;
  job: Job<BullData>;
  run: ledger.RunRef;
  ms: number;
  graceMs: number;
  /** The run's controller: its signal is the processor's ctx.signal. */
  controller: AbortController;
  /** Aborted when the run's BullMQ lock was lost: another run of the same generation owns the job then. */
  lockLost?: AbortSignal;
  /** Called before the generation is bumped, so what the run has kept so far (its log lines) is still written. */
  beforeAbandon?: () => Promise<void>;
  log: () => Logger;
}

// Every run has one, so it is a class whose timers call module functions: a closure per run and per callback would
// each cost an allocation (and, under tsx, a property definition for its name).
export class TimeLimit {
  /** Made when the limit passes, not per run: an Error captures a stack. */
  private reason: RunTimeout | undefined;
  private settled = false;
  private abandoning = false;
  private giveUp: ((err: RunTimeout) => void) | undefined;
  private readonly timer: NodeJS.Timeout;
  private grace: NodeJS.Timeout | undefined;
  /** The run under which to write this run's end: the new generation once abandoned. */
  end: ledger.RunRef;

  constructor(readonly o: TimeLimitOptions) {
    this.end = o.run;
    this.timer = setTimeout(passLimit, o.ms, this);
  }

  /**
   * Settles as `work` does, unless the run is abandoned: it then rejects with the RunTimeout, once the job is queued
   * again as a new generation, and what `work` does afterwards is ignored.
   */
  race<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.giveUp = reject;
      work.then(
        (v) => this.settle() && resolve(v),
        (err) => this.settle() && reject(err),
      );
    });
  }

  /** Whether the run's signal was aborted by its time limit (not by a cancel). */
  timedOut(): boolean {
    return this.reason !== undefined && this.o.controller.signal.reason === this.reason;
  }

  /** Whether the runtime stopped waiting for the run. */
  get abandoned(): boolean {
    return this.abandoning;
  }

  /** The error a timed-out run ends with (the signal's reason). */
  get error(): RunTimeout {
    return this.reason ?? new RunTimeout(this.o.ms);
  }

  /** Stops the timers (the run has ended). */
  clear(): void {
    clearTimeout(this.timer);
    clearTimeout(this.grace);
  }

  private settle(): boolean {
    if (this.abandoning) return false;
    this.settled = true;
    return true;
  }

  /** @internal the limit has passed: abort the run, and give it the grace period to stop. */
  pass(): void {
    // A run already stopping (cancelled, superseded) is left to that.
    if (this.o.controller.signal.aborted) return;
    this.reason = new RunTimeout(this.o.ms);
    this.o.controller.abort(this.reason);
    this.grace = setTimeout(giveUpOn, this.o.graceMs, this);
  }

  /** @internal the grace period is over and the run goes on: stop waiting for it. */
  async abandon(): Promise<void> {
    if (this.settled) return;
    this.abandoning = true;
    const { o } = this;
    o.log().warn({ limit_ms: o.ms, grace_ms: o.graceMs }, 'run ignored its time limit; abandoning it');
    try {
      await o.beforeAbandon?.();
      // A run whose lock was lost no longer owns the job (BullMQ handed it to another run): it only stops being waited
      // for, and changes nothing.
      if (o.lockLost?.aborted) throw new Error('lock lost');
      // Queued again as a new generation (fenced on this run's): the abandoned run's later writes no longer match.
      const [row] = await ledger.requeueLost(o.db, [{ id: o.run.id, generation: o.run.gen }]);
      if (row) {
        // BullMQ's next attempt must run as the new generation; if this fails, that attempt is refused as superseded
        // and the reconciler queues the job again (its BullMQ outcome is of an older generation than the ledger's).
        await o.job.updateData({ ...o.job.data, gen: row.generation });
        this.end = { id: o.run.id, gen: row.generation };
      }
    } catch (err) {
      if (!o.lockLost?.aborted)
        o.log().error({ err }, 'abandoning a timed-out run: queueing it as a new generation failed');
    }
    this.giveUp?.(this.error);
  }
}

function passLimit(limit: TimeLimit) {
  limit.pass();
}

function giveUpOn(limit: TimeLimit) {
  void limit.abandon();
}

/** Starts the run's time limit; call `clear()` once the run has ended. */
export function startTimeLimit(o: TimeLimitOptions): TimeLimit {
  return new TimeLimit(o);
}
