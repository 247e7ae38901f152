// The public shape of a job (docs/api.md "Jobs"): the zod schema the OpenAPI document shows, and the type derived
// from it that the ledger's toApiJob builds and the client, the console and the live streams read.
import { z } from '@hono/zod-openapi';
import { JOB_STATES, PRIORITIES } from '../domain.js';

/** A job's error as the ledger keeps it (jobs.error). */
export const JobErrorSchema = z.object({ code: z.string(), message: z.string() });

export const JobSchema = z
  .object({
    id: z.string(),
    type: z.string(),
    state: z.enum(JOB_STATES),
    priority: z.enum(PRIORITIES),
    payload: z.unknown(),
    progress: z.number().int(),
    attempts: z.number().int(),
    max_attempts: z.number().int(),
    result: z.unknown(),
    error: JobErrorSchema.nullable(),
    created_at: z.string(),
    started_at: z.string().nullable(),
    finished_at: z.string().nullable(),
    run_at: z.string().nullable(),
    timeout_ms: z.number().int().nullable().openapi({
      description:
        "The run time limit in ms: past it the run is aborted and fails with error.code `timeout`; null: the type's default",
    }),
    expires_at: z.string().nullable().openapi({
      description: 'Not started by then, the job never starts: it ends `cancelled` with error.code `expired`',
    }),
    tenant: z.string(),
    callback_url: z.string().optional(),
    parent_id: z.string().optional(),
    dedupe_key: z.string().optional(),
    cancel_requested: z.boolean().optional(),
  })
  .openapi('Job');

export type ApiJob = z.infer<typeof JobSchema>;
