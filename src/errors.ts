// Failures by name: the errors processors and the runtime throw, the reasons the runtime leaves in BullMQ (a failed
// job's failedReason, which the reconciler and the metrics read back), the ledger's error codes for them, and the
// test for "PostgreSQL is unreachable" that decides between pausing and failing.
import { UnrecoverableError, type Job } from 'bullmq';
import { ZodError } from 'zod';
import type { JobError } from './db/types.js';

/** The codes the platform itself writes into jobs.error; job types add their own (smtp_rejected, image_corrupt, …). */
export const ERROR_CODE = {
  /** The payload failed its type's schema. */
  invalidPayload: 'invalid_payload',
  /** A processor threw BullMQ's UnrecoverableError itself. */
  unrecoverable: 'unrecoverable',
  /** Anything else a processor threw without a code of its own. */
  processorError: 'processor_error',
  /** BullMQ failed the job because it stalled too often (its workers died under it). */
  stalled: 'stalled',
} as const;

/** BullMQ's failedReason of a run that ended cancelled; also the message of the abort that cancels a run. */
export const CANCELLED = 'cancelled';

/** BullMQ's failedReason of a run the ledger no longer held (see Superseded). */
const SUPERSEDED = 'superseded';

/**
 * BullMQ's reason for a job that stalled more than `maxStalledCount` times (its workers died under it). It is set by
 * BullMQ's stall check as a deferred failure, never by a processor.
 */
export const STALLED_REASON = 'job stalled more than allowable limit';

/** Longest error message kept in the ledger. */
const MAX_MESSAGE = 2000;

/** A failure that no retry can fix: the job fails at once with this code. */
export class PermanentError extends Error {
  override name = 'PermanentError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A failure worth retrying, with a code for the ledger. */
export class RetryableError extends Error {
  override name = 'RetryableError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The reason a run's signal is aborted with when it passes its time limit (`ctx.signal.reason`): the attempt fails
 * with error.code "timeout" and is retried like any failure. A processor may tell it from a cancel by this class.
 */
export class RunTimeout extends RetryableError {
  override name = 'RunTimeout';
  constructor(readonly limitMs: number) {
    super('timeout', `the run passed its time limit of ${limitMs} ms`);
  }
}

/** Thrown into BullMQ when a run ends cancelled: no retry. Its failedReason is CANCELLED. */
export class Cancelled extends UnrecoverableError {
  constructor() {
    super(CANCELLED);
  }
}

/**
 * Thrown into BullMQ by a run the ledger no longer holds (the job was queued again as a newer generation, or its row
 * was ended meanwhile): it stops, writes nothing, and is not retried.
 */
export class Superseded extends UnrecoverableError {
  constructor() {
    super(SUPERSEDED);
  }
}

/**
 * Whether a BullMQ failure is a real stall: BullMQ fails such a job with its deferred failure (`job.deferredFailure`),
 * without running the processor. Words in an error message (an SMTP reply saying "stalled") are not a stall.
 */
export function isStallFailure(job: Job, err: Error): boolean {
  return typeof job.deferredFailure === 'string' && job.deferredFailure !== '' && err.message === job.deferredFailure;
}

/** Whether the failure fails the job for good, whatever attempts are left. */
export function isPermanent(err: unknown): boolean {
  return err instanceof PermanentError || err instanceof ZodError || err instanceof UnrecoverableError;
}

/** The ledger error for what a processor threw. */
export function errorOf(err: unknown): JobError {
  if (err instanceof ZodError) {
    const detail = err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    return { code: ERROR_CODE.invalidPayload, message: detail.slice(0, MAX_MESSAGE) };
  }
  if (err instanceof PermanentError || err instanceof RetryableError) return { code: err.code, message: err.message };
  const e = err as { code?: unknown; message?: unknown; name?: string } | null;
  const message = String(e?.message ?? err).slice(0, MAX_MESSAGE);
  if (err instanceof UnrecoverableError) return { code: ERROR_CODE.unrecoverable, message };
  return { code: typeof e?.code === 'string' ? e.code : ERROR_CODE.processorError, message };
}

/**
 * The permanent failure's ledger error as the BullMQ failure of its run: its failedReason is "<code>: <message>", so
 * that errorOfReason gives the same error back (the reconciler, when the run's own ledger write was lost).
 */
export function permanentFailure(error: JobError): UnrecoverableError {
  return new UnrecoverableError(`${error.code}: ${error.message}`);
}

/** Reads permanentFailure's "<code>: <message>" back. */
const CODED_REASON = /^([a-z][a-z0-9_]*): ([\s\S]*)$/;

/**
 * The ledger error for a failure BullMQ recorded as text (its `failedReason`): a job that stalled too often (BullMQ's
 * own reason, word for word), or the runtime's own "<code>: <message>" of a permanent error, or else a processor error.
 */
export function errorOfReason(reason: string): JobError {
  if (reason === STALLED_REASON) return { code: ERROR_CODE.stalled, message: reason };
  const m = CODED_REASON.exec(reason);
  return { code: m?.[1] ?? ERROR_CODE.processorError, message: (m?.[2] ?? reason).slice(0, MAX_MESSAGE) };
}

/** Error codes (node's and PostgreSQL's) that mean "PostgreSQL is unreachable", as opposed to a bad query. */
const DB_UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EPIPE',
  // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
  '57P01',
  '57P02',
  '57P03',
  '53300',
  // connection_failure, sqlclient_unable_to_establish_sqlconnection, connection_does_not_exist,
  // sqlserver_rejected_establishment_of_sqlconnection
  '08006',
  '08001',
  '08003',
  '08004',
]);

/** What pg says when its connection is gone and the error carries no code. */
const DB_UNAVAILABLE_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|connect ECONNREFUSED/i;

/** True for errors that mean "PostgreSQL is unreachable", as opposed to a bad query. */
export function isDbUnavailable(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  if (!e) return false;
  if (e.code && DB_UNAVAILABLE_CODES.has(e.code)) return true;
  return DB_UNAVAILABLE_MESSAGE.test(e.message ?? '');
}
