import { createRoute, z } from '@hono/zod-openapi';
import type { Principal } from '../../auth/keys.js';
import * as ledger from '../../db/jobs.js';
import type { JobRow } from '../../db/types.js';
import { publishJobEvent } from '../../events.js';
import { crossTenantReport } from '../../jobs/report.js';
import { checkSpec, groupSubmitter, jobSpec, requestHash, submit, type JobSpec } from '../../jobs/submit.js';
import { retryOne } from '../../queue-controls.js';
import { keys } from '../../queues.js';
import { tenantFileIds } from '../../files.js';
import { enqueueWebhook } from '../../webhooks/delivery.js';
import { checkUrl, RefusedError } from '../../webhooks/guard.js';
import { tenantScope } from '../auth.js';
import { JobCache } from '../job-cache.js';
import type { AppDeps } from '../deps.js';
import { problem, type FieldError } from '../errors.js';
import { problems, router, security } from '../openapi.js';
import { assertUuid, decodeCursor, encodeCursor, JobIdParam, ListQuery } from '../params.js';

export const JobSchema = z
  .object({
    id: z.string(),
    type: z.string(),
    state: z.enum(['queued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled']),
    priority: z.enum(['high', 'normal', 'low']),
    payload: z.unknown(),
    progress: z.number().int(),
    attempts: z.number().int(),
    max_attempts: z.number().int(),
    result: z.unknown(),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    created_at: z.string(),
    started_at: z.string().nullable(),
    finished_at: z.string().nullable(),
    run_at: z.string().nullable(),
    tenant: z.string(),
    callback_url: z.string().optional(),
    parent_id: z.string().optional(),
    cancel_requested: z.boolean().optional(),
  })
  .openapi('Job');

// zod 4 attaches `.openapi()` per instance, so a schema built before @hono/zod-openapi loaded lacks it; name it with `.meta`.
const JobSpecSchema = jobSpec.meta({
  id: 'JobSubmission',
  description: 'One job. `payload` is checked against the schema of its `type`.',
});

const jobContent = { 'application/json': { schema: JobSchema } };
const IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000;

/** Every error for one job spec, or the ledger row to insert. */
function validateSpecs(deps: AppDeps, specs: JobSpec[], prefix: (string | number)[]) {
  const errors: FieldError[] = [];
  let unavailable = false;
  const rows = specs.map((spec, i) => {
    const { row, issues } = checkSpec(deps.registry, spec);
    for (const issue of issues) {
      unavailable ||= issue.code === 'unavailable';
      errors.push({
        path: [...prefix, ...(specs.length > 1 || prefix.length ? [i] : []), ...issue.path].join('.'),
        message: issue.message,
      });
    }
    return row!;
  });
  if (errors.length) {
    if (unavailable)
      throw problem.unprocessable(
        'type-unavailable',
        'A job type in the request has no processor on this platform yet.',
        { errors },
      );
    throw problem.validation(errors);
  }
  return rows;
}

/**
 * What can be checked before accepting, beyond the schemas: an image job's file must be one of the tenant's (one
 * lookup for the whole batch), and a callback_url must not name a private or loopback address literally (the
 * webhook guard's own check; names are resolved, and refused if need be, at delivery).
 */
async function assertSubmittable(deps: AppDeps, tenant: string, specs: JobSpec[], prefix: (string | number)[]) {
  const at = (i: number, ...rest: string[]) =>
    [...prefix, ...(specs.length > 1 || prefix.length ? [i] : []), ...rest].join('.');
  const errors: FieldError[] = [];
  specs.forEach((spec, i) => {
    if (!spec.callback_url) return;
    try {
      checkUrl(spec.callback_url, { allowPrivate: deps.config.WEBHOOK_ALLOW_PRIVATE });
    } catch (err) {
      if (!(err instanceof RefusedError)) throw err;
      errors.push({
        path: at(i, 'callback_url'),
        message: `${err.message}; callbacks go to public addresses (WEBHOOK_ALLOW_PRIVATE=true allows others)`,
      });
    }
  });
  const wanted = specs.flatMap((s, i) =>
    s.type === 'image' && typeof s.payload.file_id === 'string' ? [{ i, id: s.payload.file_id }] : [],
  );
  if (wanted.length) {
    const have = await tenantFileIds(
      deps.db,
      tenant,
      wanted.map((w) => w.id),
    );
    for (const w of wanted)
      if (!have.has(w.id))
        errors.push({
          path: at(w.i, 'payload', 'file_id'),
          message: `no file ${w.id} for this tenant: upload it first (POST /v1/files) and use the id it returns`,
        });
  }
  if (errors.length)
    throw problem.unprocessable('not-submittable', 'The job cannot run as submitted; see errors.', { errors });
}

/** A report across every tenant (payload.scope "all") is for operator keys only. */
function assertScopeAllowed(specs: JobSpec[], principal: Principal) {
  if (principal.role !== 'operator' && specs.some(crossTenantReport))
    throw problem.forbidden('Only operator keys may ask for a report across all tenants (payload.scope "all").');
}

/** Refuses new work while Redis is unreachable, before anything is written. */
function assertRedisUp(deps: AppDeps) {
  if (deps.redis.status !== 'ready') throw problem.unavailable('The queue (Redis) is unreachable; try again shortly.');
}

export function jobsRoutes(deps: AppDeps) {
  const app = router();
  const { db } = deps;
  const submitOne = groupSubmitter(deps);

  // Status reads: from memory while no job event says the job changed, else one batched primary-key lookup.
  const cache = new JobCache(deps.hub, (ids) => ledger.findJobsByIds(db, ids), deps.config.STATUS_CACHE_MS);

  const ownJob = async (id: string, principal: Principal): Promise<JobRow> => {
    const row = await ledger.findJob(db, assertUuid(id), tenantScope(principal));
    if (!row) throw problem.notFound('job');
    return row;
  };

  app.openapi(
    createRoute({
      method: 'post',
      path: '/jobs',
      summary: 'Submit a job',
      security,
      request: {
        body: { required: true, content: { 'application/json': { schema: JobSpecSchema } } },
      },
      // Documented here and checked in the handler: a header schema makes the validator copy every request header.
      parameters: [
        {
          in: 'header',
          name: 'Idempotency-Key',
          required: false,
          description: 'Names this submission for 24 h: a repeat with the same body answers 200 with the first job.',
          schema: { type: 'string', minLength: 1, maxLength: 200 },
        },
      ],
      responses: {
        200: { description: 'The job first submitted with this Idempotency-Key', content: jobContent },
        202: { description: 'Accepted: the job is in the ledger', content: jobContent },
        ...problems(400, 401, 403, 409, 413, 422, 503),
      },
    }),
    async (c) => {
      const key = c.req.header('idempotency-key');
      if (key !== undefined && (key.length < 1 || key.length > 200)) {
        throw problem.validation([{ path: 'idempotency-key', message: 'must be 1 to 200 characters' }]);
      }
      const spec = c.req.valid('json');
      const principal = c.get('principal');
      const [row] = validateSpecs(deps, [spec], []);
      assertScopeAllowed([spec], principal);
      await assertSubmittable(deps, principal.tenant, [spec], []);
      assertRedisUp(deps);
      let job: JobRow | undefined;
      if (key) {
        const hash = requestHash(spec);
        const replay = async () => {
          const first = await ledger.findByIdempotencyKey(db, principal.tenant, key);
          if (!first) return undefined;
          // A key names its first job for 24 h; after that it is free for a new one.
          if (Date.now() - first.created_at.getTime() > IDEMPOTENCY_WINDOW_MS) {
            await ledger.expireIdempotencyKey(db, principal.tenant, key);
            return undefined;
          }
          if (first.request_hash !== hash)
            throw problem.conflict('This Idempotency-Key was used with a different request body.');
          return c.json(ledger.toApiJob(first), 200, { Location: `/v1/jobs/${first.id}` });
        };
        const earlier = await replay();
        if (earlier) return earlier;
        try {
          [job] = await submit(deps, principal.tenant, [row], { idempotency_key: key, request_hash: hash });
        } catch (err) {
          // A concurrent request with the same key won the insert.
          if ((err as { code?: string }).code === '23505') {
            const raced = await replay();
            if (raced) return raced;
          }
          throw err;
        }
      } else {
        job = await submitOne(principal.tenant, row);
      }
      return c.json(ledger.toApiJob(job), 202, { Location: `/v1/jobs/${job.id}` });
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/jobs/bulk',
      summary: 'Submit up to 1000 jobs; all valid or none accepted',
      security,
      request: {
        body: {
          required: true,
          content: {
            'application/json': { schema: z.strictObject({ jobs: z.array(JobSpecSchema).min(1).max(1000) }) },
          },
        },
      },
      responses: {
        202: {
          description: 'Accepted',
          content: { 'application/json': { schema: z.object({ jobs: z.array(JobSchema) }) } },
        },
        ...problems(400, 401, 403, 413, 422, 503),
      },
    }),
    async (c) => {
      const { jobs } = c.req.valid('json');
      const rows = validateSpecs(deps, jobs, ['jobs']);
      assertScopeAllowed(jobs, c.get('principal'));
      await assertSubmittable(deps, c.get('principal').tenant, jobs, ['jobs']);
      assertRedisUp(deps);
      const inserted = await submit(deps, c.get('principal').tenant, rows);
      return c.json({ jobs: inserted.map(ledger.toApiJob) }, 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs',
      summary: 'List jobs, newest first',
      security,
      request: {
        query: ListQuery.extend({
          type: z.string().max(40).optional(),
          state: z.enum(['queued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled']).optional(),
        }),
      },
      responses: {
        200: {
          description: 'A page of jobs',
          content: {
            'application/json': { schema: z.object({ items: z.array(JobSchema), next_cursor: z.string().nullable() }) },
          },
        },
        ...problems(400, 401),
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const rows = await ledger.listJobs(db, {
        tenant: tenantScope(c.get('principal')),
        type: q.type,
        state: q.state,
        before: q.cursor ? decodeCursor(q.cursor) : undefined,
        limit: q.limit + 1,
      });
      const page = rows.slice(0, q.limit);
      const next_cursor = rows.length > q.limit ? encodeCursor(page[page.length - 1].id) : null;
      return c.json({ items: page.map(ledger.toApiJob), next_cursor }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}',
      summary: 'A job, read from the ledger by primary key',
      security,
      request: { params: JobIdParam },
      responses: { 200: { description: 'The job', content: jobContent }, ...problems(401, 404) },
    }),
    async (c) => {
      const job = await cache.get(assertUuid(c.req.valid('param').id));
      const scope = tenantScope(c.get('principal'));
      if (!job || (scope !== undefined && job.tenant !== scope)) throw problem.notFound('job');
      return c.json(job, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/jobs/{id}/cancel',
      summary: 'Cancel a queued, delayed or running job',
      security,
      request: { params: JobIdParam },
      responses: {
        200: { description: 'Cancelled (it was queued or delayed)', content: jobContent },
        202: { description: 'Running: the processor has been told to stop', content: jobContent },
        ...problems(401, 404, 409, 503),
      },
    }),
    async (c) => {
      const job = await ownJob(c.req.valid('param').id, c.get('principal'));
      if (ledger.TERMINAL.includes(job.state))
        throw problem.conflict(`The job is already ${job.state}.`, { state: job.state });
      assertRedisUp(deps);
      // Ledger first: a worker that picks the job up after this sees it cancelled and skips it.
      const cancelled = await ledger.markCancelled(db, job.id, ['queued', 'delayed']);
      cache.forget(job.id);
      if (cancelled) {
        await deps.queues
          .get(job.type)
          .remove(job.id)
          .catch(() => 0);
        await publishJobEvent(deps.redis, deps.config, 'state', cancelled);
        await enqueueWebhook(deps.queues, deps.config, cancelled).catch((err) =>
          deps.log.error({ err, job_id: job.id }, 'webhook enqueue failed'),
        );
        return c.json(ledger.toApiJob(cancelled), 200);
      }
      const running = await ledger.requestCancel(db, job.id);
      if (!running) {
        const now = await ownJob(job.id, c.get('principal'));
        throw problem.conflict(`The job is already ${now.state}.`, { state: now.state });
      }
      await deps.redis.publish(keys(deps.config).cancel, job.id);
      return c.json(ledger.toApiJob(running), 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/jobs/{id}/retry',
      summary: 'Run a failed or cancelled job again',
      security,
      request: { params: JobIdParam },
      responses: { 202: { description: 'Queued again', content: jobContent }, ...problems(401, 404, 409, 503) },
    }),
    async (c) => {
      const job = await ownJob(c.req.valid('param').id, c.get('principal'));
      if (job.state !== 'failed' && job.state !== 'cancelled')
        throw problem.conflict(`Only failed or cancelled jobs can be retried; this one is ${job.state}.`, {
          state: job.state,
        });
      assertRedisUp(deps);
      const row = await retryOne(deps, job.id);
      cache.forget(job.id);
      if (!row) throw problem.conflict('The job changed state meanwhile; read it again.');
      return c.json(ledger.toApiJob(row), 202);
    },
  );

  return app;
}
