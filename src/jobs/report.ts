/*
 * report — payload {kind, from?, to?, format?}.
 * Side effects: one stored file, named from the job.
 * Result: {file_id, format, rows, bytes}.
 */
import { z } from 'zod';
import { defineJob } from './registry.js';

export const reportPayload = z.strictObject({
  kind: z.enum(['jobs', 'ratings']),
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
  format: z.enum(['csv', 'pdf']).default('csv'),
});

export const report = defineJob({
  type: 'report',
  description: 'A CSV or PDF report from PostgreSQL',
  payload: reportPayload,
  attempts: 3,
  backoffMs: 10_000,
  concurrency: 2,
});
