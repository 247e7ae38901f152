// The write-behind half of a run's ledger: a run that succeeded hands its result back to BullMQ at once, and its
// ledger finish is committed a few milliseconds later with whatever else is being written (other runs' starts and
// finishes share one statement through the runtime's group commit). Never dropped: a write that finds PostgreSQL away
// is tried again until it commits, and the process's shutdown waits for it. If the process dies first, BullMQ still
// holds the completed job with its return value (retention is by age only, see src/queues/index.ts RETENTION), and the
// reconciler writes that result to the ledger (src/workers/reconciler.ts).
import { isDbUnavailable } from '../errors.js';
import type { RunRef } from '../db/jobs.js';
import type { JobRow } from '../db/types.js';

export interface BehindFinish<C> extends RunRef {
  result: unknown;
  /** Whatever the caller wants back with the outcome (what it logs, when it started). */
  context: C;
}

export interface WriteBehindOptions<C> {
  /** The fenced finish (group-committed): the row as it now stands, or undefined when the ledger no longer holds the run. */
  write(finish: BehindFinish<C>): Promise<JobRow | undefined>;
  /** After the commit: webhooks, log lines. Its errors are the caller's. */
  committed(finish: BehindFinish<C>, row: JobRow | undefined): Promise<void> | void;
  /** The database refused this finish itself (not an outage): the caller records a failure instead. */
  refused(finish: BehindFinish<C>, err: unknown): Promise<void> | void;
  /** PostgreSQL is away: the caller stops taking work (the write is tried again meanwhile). */
  unavailable(err: unknown): void;
  /** How long a finish waits before it joins the next write (0: at once). */
  delayMs: number;
  /** Between tries while PostgreSQL is away. */
  retryMs: number;
}

export function writeBehind<C>(opts: WriteBehindOptions<C>) {
  // Finishes handed over and not yet committed (or refused): a shutdown waits for them.
  let pending = 0;
  let idle: (() => void)[] = [];
  // Finishes waiting out `delayMs` or a retry pause, by their timer: a drain sends them at once.
  const waiting = new Map<NodeJS.Timeout, BehindFinish<C>>();
  let draining = false;
  let gaveUp = false;

  const settle = () => {
    if (--pending > 0) return;
    for (const resolve of idle) resolve();
    idle = [];
  };

  const later = (finish: BehindFinish<C>, ms: number) => {
    if (gaveUp) return;
    const timer = setTimeout(() => {
      waiting.delete(timer);
      send(finish);
    }, ms);
    waiting.set(timer, finish);
  };

  function send(finish: BehindFinish<C>): void {
    void opts
      .write(finish)
      .then(
        async (row) => {
          try {
            await opts.committed(finish, row);
          } finally {
            settle();
          }
        },
        async (err) => {
          if (isDbUnavailable(err)) {
            opts.unavailable(err);
            return later(finish, opts.retryMs);
          }
          try {
            await opts.refused(finish, err);
          } finally {
            settle();
          }
        },
      )
      // What follows a commit (a webhook enqueue, a log line) reports its own errors; none may escape as unhandled.
      .catch(() => undefined);
  }

  return {
    /** Hands a finished run over; returns at once. Its write goes after `after` (the run's start commit) settles. */
    add(finish: BehindFinish<C>, after?: Promise<unknown>): void {
      pending++;
      const go = () => {
        if (opts.delayMs > 0 && !draining) later(finish, opts.delayMs);
        else send(finish);
      };
      if (after) void after.then(go, go);
      else go();
    },
    /** Finishes not yet committed. */
    get pending(): number {
      return pending;
    },
    /**
     * Sends what waits out its delay now and resolves once everything handed over has committed, or after
     * `timeoutMs` with false (PostgreSQL still away: what is left is the reconciler's, from BullMQ's records).
     */
    async drain(timeoutMs: number): Promise<boolean> {
      draining = true;
      for (const [timer, finish] of waiting) {
        clearTimeout(timer);
        waiting.delete(timer);
        send(finish);
      }
      if (pending === 0) return true;
      let timer: NodeJS.Timeout | undefined;
      const done = await Promise.race([
        new Promise<boolean>((resolve) => idle.push(() => resolve(true))),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
      ]);
      clearTimeout(timer);
      // Given up: nothing more is tried from this process (its timers would keep it alive).
      gaveUp = !done;
      for (const t of waiting.keys()) clearTimeout(t);
      waiting.clear();
      return done;
    },
  };
}
