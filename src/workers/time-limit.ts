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
import { RunTimeout } from '../jobs/types.js';

export interface TimeLimit {
  /**
   * Settles as `work` does, unless the run is abandoned: it then rejects with the RunTimeout, once the job is queued
   * again as a new generation, and what `work` does afterwards is ignored.
   */
  race<T>(work: Promise<T>): Promise<T>;
  /** Whether the run's signal was aborted by its time limit (not by a cancel). */
  timedOut(): boolean;
  /** Whether the runtime stopped waiting for the run. */
  readonly abandoned: boolean;
  /** The error a timed-out run ends with. */
  readonly error: RunTimeout;
  /** The run under which to write this run's end: the new generation once abandoned. */
  readonly end: ledger.RunRef;
  /** Stops the timers (the run has ended). */
  clear(): void;
}

export interface TimeLimitOptions {
  db: Db;
  job: Job<BullData>;
  run: ledger.RunRef;
  ms: number;
  graceMs: number;
  /** The run's controller: its signal is the processor's ctx.signal. */
  controller: AbortController;
  /** Called before the generation is bumped, so what the run has kept so far (its log lines) is still written. */
  beforeAbandon?: () => Promise<void>;
  log: () => Logger;
}

export function startTimeLimit(o: TimeLimitOptions): TimeLimit {
  const error = new RunTimeout(o.ms);
  let end = o.run;
  let settled = false;
  let abandoned = false;
  let grace: NodeJS.Timeout | undefined;
  let giveUp: (err: RunTimeout) => void = () => {};
  const givenUp = new Promise<never>((_, reject) => (giveUp = reject));
  givenUp.catch(() => undefined);

  async function abandon() {
    if (settled) return;
    abandoned = true;
    o.log().warn({ limit_ms: o.ms, grace_ms: o.graceMs }, 'run ignored its time limit; abandoning it');
    try {
      await o.beforeAbandon?.();
      // Queued again as a new generation (fenced on this run's): the abandoned run's later writes no longer match.
      const [row] = await ledger.requeueLost(o.db, [{ id: o.run.id, generation: o.run.gen }]);
      if (row) {
        // BullMQ's next attempt must run as the new generation; if this fails, that attempt is refused as superseded
        // and the reconciler queues the job again (its BullMQ outcome is of an older generation than the ledger's).
        await o.job.updateData({ ...o.job.data, gen: row.generation });
        end = { id: o.run.id, gen: row.generation };
      }
    } catch (err) {
      o.log().error({ err }, 'abandoning a timed-out run: queueing it as a new generation failed');
    }
    giveUp(error);
  }

  const timer = setTimeout(() => {
    // A run already stopping (cancelled, superseded) is left to that.
    if (o.controller.signal.aborted) return;
    o.controller.abort(error);
    grace = setTimeout(() => void abandon(), o.graceMs);
  }, o.ms);

  return {
    race<T>(work: Promise<T>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        work.then(
          (v) => {
            if (abandoned) return;
            settled = true;
            resolve(v);
          },
          (err) => {
            if (abandoned) return;
            settled = true;
            reject(err);
          },
        );
        givenUp.catch(reject);
      });
    },
    timedOut: () => o.controller.signal.reason === error,
    get abandoned() {
      return abandoned;
    },
    error,
    get end() {
      return end;
    },
    clear() {
      clearTimeout(timer);
      clearTimeout(grace);
    },
  };
}
