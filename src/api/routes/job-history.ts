// A job's story: its timeline (every attempt and state change) and the log lines its processor kept.
import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import { jobLogs } from '../../db/job-logs.js';
import { findJob } from '../../db/jobs.js';
import { JOB_STATES } from '../../domain.js';
import { JobErrorSchema } from '../../jobs/api-job.js';
import { jobTimeline } from '../../db/timeline.js';
import { tenantScope } from '../auth.js';
import { problem } from '../errors.js';
import { problems, router, security } from '../openapi.js';
import { assertUuid, JobIdParam } from '../params.js';

const ErrorSchema = JobErrorSchema.nullable();

const TimelineSchema = z
  .object({
    job_id: z.string(),
    created_at: z.string(),
    events: z.array(
      z.object({
        at: z.string(),
        generation: z
          .number()
          .int()
          .openapi({ description: 'The run identity: bumped whenever the job is queued again' }),
        attempt: z.number().int(),
        from: z.enum(JOB_STATES),
        to: z.enum(JOB_STATES),
        process: z.string().nullable().openapi({ description: 'host:pid of the process that made the change' }),
        error: ErrorSchema,
      }),
    ),
    attempts: z.array(
      z.object({
        generation: z.number().int(),
        attempt: z.number().int(),
        process: z.string().nullable().openapi({ description: 'host:pid of the worker that ran it' }),
        started_at: z.string(),
        ended_at: z.string().nullable(),
        wait_ms: z.number().int().openapi({ description: 'From creation, or from being queued again, to this start' }),
        run_ms: z.number().int().nullable(),
        outcome: z
          .enum(JOB_STATES)
          .nullable()
          .openapi({ description: "The state it left the job in; 'delayed': will retry" }),
        error: ErrorSchema,
      }),
    ),
  })
  .openapi('JobTimeline');

const LogsSchema = z
  .object({
    items: z.array(
      z.object({
        at: z.string(),
        generation: z.number().int(),
        message: z.string(),
        fields: z.record(z.string(), z.unknown()).nullable(),
      }),
    ),
    truncated: z.boolean().openapi({ description: 'The per-job bound was reached: later lines were dropped' }),
  })
  .openapi('JobLogs');

export function jobHistoryRoutes(deps: ApiServices) {
  const app = router();
  const { db } = deps;

  const ownJob = async (id: string, scope: string | undefined) => {
    const row = await findJob(db, assertUuid(id), scope);
    if (!row) throw problem.notFound('job');
    return row;
  };

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/timeline',
      summary: "A job's attempts and state changes: when, on which worker, how long it waited and ran, each error",
      security,
      request: { params: JobIdParam },
      responses: {
        200: { description: 'The timeline, oldest first', content: { 'application/json': { schema: TimelineSchema } } },
        ...problems(401, 404),
      },
    }),
    async (c) => {
      const job = await ownJob(c.req.valid('param').id, tenantScope(c.get('principal')));
      const timeline = await jobTimeline(db, job.id);
      if (!timeline) throw problem.notFound('job');
      return c.json(timeline, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/logs',
      summary: "The log lines the job's processor kept (bounded per job in lines and bytes)",
      security,
      request: { params: JobIdParam },
      responses: {
        200: { description: 'The lines, oldest first', content: { 'application/json': { schema: LogsSchema } } },
        ...problems(401, 404),
      },
    }),
    async (c) => {
      const job = await ownJob(c.req.valid('param').id, tenantScope(c.get('principal')));
      return c.json(await jobLogs(db, job.id), 200);
    },
  );

  return app;
}
