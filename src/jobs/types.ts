import type { Services } from '../services.js';
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Config } from '../config.js';

/** What a processor gets: the parsed payload, the ledger ids, and the process's shared resources. */
export interface JobContext<P> {
  id: string;
  tenant: string;
  type: string;
  payload: P;
  /** 1 on the first run. */
  attempt: number;
  /**
   * The run's generation (jobs.generation, carried in the BullMQ job data as `gen`): bumped whenever the job is queued
   * again, and every run-scoped ledger write is fenced on it. A side effect's owner is (id, gen, attempt).
   */
  gen: number;
  maxAttempts: number;
  /**
   * Aborted when a client cancels the job, or when the run passes its time limit (`reason` is then a RunTimeout). A run
   * that does not stop within the grace period after its time limit is abandoned: the runtime stops waiting for it and
   * its later ledger writes are refused (src/workers/time-limit.ts).
   */
  signal: AbortSignal;
  /**
   * Aborted when BullMQ could not renew this run's lock (its `lockRenewalFailed`): another worker may be running the job
   * now. Start no new side effect; let those under way finish and record them.
   */
  lockLost: AbortSignal;
  /** 0..100; written to the ledger and published to live streams. */
  progress(percent: number): Promise<void>;
  /** The pino logger, for operators' logs. */
  log: Logger;
  /**
   * Keeps a line with the job (GET /v1/jobs/{id}/logs, the console's job page): its meaningful steps, not debugging.
   * Bounded per job in lines and bytes; buffered and written in batches, so it never waits.
   */
  jobLog(message: string, fields?: Record<string, unknown>): void;
  deps: Services;
  /** The BullMQ job, for processors that need flows or tokens. */
  bull: Job;
  token?: string;
}

export interface JobDefinition<S extends z.ZodType = z.ZodType, R = unknown> {
  type: string;
  /** One line for the OpenAPI document and the dashboard. */
  description: string;
  payload: S;
  /** Total runs including the first. */
  attempts: number;
  /** Base delay of the exponential backoff between attempts. */
  backoffMs: number;
  /** Concurrent jobs per worker process. */
  concurrency: number;
  /** A run's time limit when the job does not ask for one (default DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  /** The longest time limit a job of this type may ask for (`timeout_ms` on submit); default: the larger of timeoutMs and DEFAULT_MAX_TIMEOUT_MS. */
  maxTimeoutMs?: number;
  /** BullMQ rate limiter for the whole queue (across processes); a function when it comes from the config. */
  limiter?: { max: number; duration: number } | ((config: Config) => { max: number; duration: number } | undefined);
  /** Called when a worker for this type starts (open a pool, log what is in use) and after it has closed. */
  start?: (deps: Services) => void | Promise<void>;
  stop?: (deps: Services) => void | Promise<void>;
  /** Submitted only by other jobs (a batch's chunks): workers serve its queue, the API answers it as an unknown type. */
  internal?: boolean;
  /**
   * The run need not wait for its ledger start: BullMQ carries the payload (src/jobs/enqueue.ts), the processor runs at
   * once and the start commits with the next batch. Only for processors whose one effect is their result: a run the
   * ledger would not have started (cancelled, ended, or of an older generation) still runs, and its finish is then
   * fenced out. `ctx.attempt` is BullMQ's count of runs, and progress reports wait for the start. Never for side
   * effects (email, webhooks): those need the start committed first.
   */
  startBehind?: boolean;
  /** Absent while the processor is not built: the API refuses the type with 422. */
  process?: (ctx: JobContext<z.infer<S>>) => Promise<R>;
}

/** Time limits of a type without its own: a quarter of an hour by default, an hour at most. */
const DEFAULT_TIMEOUT_MS = 15 * 60_000;
const DEFAULT_MAX_TIMEOUT_MS = 60 * 60_000;

/** A type's run time limits: the default a job gets, and the most it may ask for. */
export function timeLimits(def: Pick<JobDefinition, 'timeoutMs' | 'maxTimeoutMs'>): {
  defaultMs: number;
  maxMs: number;
} {
  const defaultMs = def.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return { defaultMs, maxMs: def.maxTimeoutMs ?? Math.max(defaultMs, DEFAULT_MAX_TIMEOUT_MS) };
}
