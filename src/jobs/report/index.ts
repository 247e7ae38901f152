/*
 * report — payload {kind: "jobs"|"ratings", from?, to?, format?: "csv"|"pdf", scope?: "tenant"|"all", notify?: [addresses]}.
 * `to` defaults to the job's creation, `from` to a day before `to`. `scope: "all"` (every tenant) is accepted
 * only from operator keys, at submission (src/api/routes/jobs.ts); the processor trusts the stored payload.
 * Side effects: one stored file, named from the job (a rerun overwrites it); with `notify`, one follow-up
 * `email` job (template report_ready), keyed by this job so a rerun asks for no second email.
 * Result: {file_id, format, rows, bytes, from, to, scope, notify_job_id?}.
 */
import { z } from 'zod';
import { runReport } from './run.js';
import { emailAddress } from '../email/index.js';
import { defineJob } from '../registry.js';

export const reportPayload = z
  .strictObject({
    kind: z.enum(['jobs', 'ratings']),
    from: z.iso.datetime({ offset: true }).optional(),
    to: z.iso.datetime({ offset: true }).optional(),
    format: z.enum(['csv', 'pdf']).default('csv'),
    scope: z.enum(['tenant', 'all']).default('tenant'),
    notify: z.array(emailAddress).min(1).max(50).optional(),
  })
  .refine((p) => !p.from || !p.to || Date.parse(p.from) < Date.parse(p.to), {
    message: 'must be after from',
    path: ['to'],
  });

/** True for a submission that only an operator may make: a report across every tenant. */
export function crossTenantReport(spec: { type: string; payload: Record<string, unknown> }): boolean {
  return spec.type === 'report' && spec.payload.scope === 'all';
}

export const report = defineJob({
  type: 'report',
  description: 'A CSV or PDF report from PostgreSQL, optionally followed by a report_ready email',
  payload: reportPayload,
  attempts: 3,
  backoffMs: 10_000,
  concurrency: 2,
  timeoutMs: 15 * 60_000,
  maxTimeoutMs: 2 * 3600_000,
  process: runReport,
});
