// The reasons the runtime leaves in BullMQ are read back by the reconciler (a run whose own ledger write was lost) and
// the metrics: what one side writes, the other must read as the same failure.
import { UnrecoverableError } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  CANCELLED,
  Cancelled,
  ERROR_CODE,
  errorOf,
  errorOfReason,
  isDbUnavailable,
  isPermanent,
  PermanentError,
  permanentFailure,
  RetryableError,
  STALLED_REASON,
  Superseded,
} from '../src/errors.js';

describe('failures as BullMQ keeps them', () => {
  it('reads a permanent failure back as the ledger error it was written from', () => {
    for (const error of [
      { code: 'smtp_rejected', message: '550 5.1.1: no such user' },
      { code: 'image_corrupt', message: 'line one\nline two: with a colon' },
      { code: 'test_permanent', message: '' },
    ])
      expect(errorOfReason(permanentFailure(error).message)).toEqual(error);
  });

  it("reads BullMQ's stall as stalled, and any other text as a processor error", () => {
    expect(errorOfReason(STALLED_REASON)).toEqual({ code: ERROR_CODE.stalled, message: STALLED_REASON });
    expect(errorOfReason('Stalled: not a code')).toEqual({
      code: ERROR_CODE.processorError,
      message: 'Stalled: not a code',
    });
    expect(errorOfReason('x'.repeat(3000)).message).toHaveLength(2000);
  });

  it('ends cancelled and superseded runs with their markers, for good', () => {
    expect(new Cancelled().message).toBe(CANCELLED);
    expect(new Superseded().message).not.toBe(CANCELLED);
    expect([new Cancelled(), new Superseded()].every(isPermanent)).toBe(true);
  });

  it('gives each thrown failure its ledger code, and fails for good only those no retry can fix', () => {
    const invalid = z.object({ to: z.string() }).safeParse({}).error;
    expect(errorOf(invalid).code).toBe(ERROR_CODE.invalidPayload);
    expect(errorOf(new PermanentError('file_missing', 'gone'))).toEqual({ code: 'file_missing', message: 'gone' });
    expect(errorOf(new RetryableError('image_timeout', 'slow'))).toEqual({ code: 'image_timeout', message: 'slow' });
    expect(errorOf(new UnrecoverableError('no')).code).toBe(ERROR_CODE.unrecoverable);
    expect(errorOf(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })).code).toBe('ECONNREFUSED');
    expect(errorOf(new Error('boom')).code).toBe(ERROR_CODE.processorError);
    expect([invalid, new PermanentError('a', 'b'), new UnrecoverableError('c')].every(isPermanent)).toBe(true);
    expect([new RetryableError('a', 'b'), new Error('c')].some(isPermanent)).toBe(false);
  });
});

describe('isDbUnavailable', () => {
  it("is true for a lost connection (node's or PostgreSQL's code, or pg's words), false for a bad query", () => {
    expect(isDbUnavailable(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isDbUnavailable(Object.assign(new Error('x'), { code: '57P01' }))).toBe(true);
    expect(isDbUnavailable(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isDbUnavailable(Object.assign(new Error('syntax error'), { code: '42601' }))).toBe(false);
    expect(isDbUnavailable(null)).toBe(false);
  });
});
