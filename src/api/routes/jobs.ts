import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import { TENANT_NAME, type Principal } from '../../auth/keys.js';
import * as ledger from '../../db/jobs.js';
import { SEARCH_MIN_CHARS, searchJobs } from '../../db/search.js';
import type { JobRow } from '../../db/types.js';
import {
  checkSpec,
  DEDUPE_KEY_MAX,
  groupSubmitter,
  jobSpec,
  requestHash,
  submitDeduped,
  timeIssues,
  type JobSpec,
} from '../../jobs/submit.js';
import { tenantFileIds } from '../../files/index.js';
import { JOB_STATES, PRIORITIES } from '../../domain.js';
import { JobSchema } from '../../jobs/api-job.js';
import { checkUrl, RefusedError } from '../../webhooks/guard.js';
import { tenantScope } from '../auth.js';
import { assertRedisUp, assertScopeAllowed, cancelJob, retryJob } from '../job-actions.js';
import { JobCache } from '../job-cache.js';
import { problem, type FieldError } from '../errors.js';
import { problems, router, security } from '../openapi.js';
import { assertUuid, decodeCursor, encodeCursor, JobIdParam, ListQuery } from '../params.js';

// zod 4 attaches `.openapi()` per instance, so a schema built before @hono/zod-openapi loaded lacks it; name it with `.meta`.
const JobSpecSchema = jobSpec.meta({
  id: 'JobSubmission',
  description: 'One job. `payload` is checked against the schema of its `type`.',
});

const jobContent = { 'application/json': { schema: JobSchema } };

const isoTime = z.iso.datetime({
  offset: true,
  message: 'must be an ISO 8601 time with a zone, e.g. 2026-12-01T10:00:00Z',
});
const SearchQuery = ListQuery.extend({
  q: z
    .string()
    .trim()
    .min(SEARCH_MIN_CHARS, `must be at least ${SEARCH_MIN_CHARS} characters`)
    .max(200)
    .optional()
    .openapi({
      description: 'A job id or id prefix, or text inside payload, result or error',
      example: 'jane@example.com',
    }),
  type: z.string().max(40).optional(),
  state: z.enum(JOB_STATES).optional(),
  priority: z.enum(PRIORITIES).optional(),
  error_code: z
    .string()
    .regex(/^[a-z][a-z0-9_]{0,63}$/, 'must be an error code such as smtp_rejected')
    .optional(),
  created_after: isoTime.optional().openapi({ description: 'Created at or after this time' }),
  created_before: isoTime.optional().openapi({ description: 'Created before this time' }),
  parent_id: z
    .string()
    .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'must be a job id')
    .optional(),
  dedupe_key: z
    .string()
    .min(1)
    .max(DEDUPE_KEY_MAX)
    .optional()
    .openapi({ description: 'Jobs submitted with this `dedupe_key`, live or ended' }),
  tenant: z
    .string()
    .regex(TENANT_NAME, 'must be a tenant name')
    .optional()
    .openapi({ description: "Operators and viewers: one tenant's jobs. Ignored for client keys (always their own)." }),
});

/** Every error for one job spec, or the ledger row to insert. */
function validateSpecs(deps: ApiServices, specs: JobSpec[], prefix: (string | number)[]) {
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
async function assertSubmittable(deps: ApiServices, tenant: string, specs: JobSpec[], prefix: (string | number)[]) {
  const at = (i: number, ...rest: string[]) =>
    [...prefix, ...(specs.length > 1 || prefix.length ? [i] : []), ...rest].join('.');
  const errors: FieldError[] = [];
  const now = Date.now();
  specs.forEach((spec, i) => {
    for (const issue of timeIssues(deps.registry, spec, now))
      errors.push({ path: at(i, ...issue.path), message: issue.message });
  });
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

export function jobsRoutes(deps: ApiServices) {
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
        200: {
          description:
            'The job first submitted with this Idempotency-Key, or (with the header `Dedupe-Hit: true`) the live job ' +
            'of this tenant with the same `dedupe_key`',
          headers: {
            'Dedupe-Hit': {
              description: '`true` when a live job with the same `dedupe_key` answered instead of a new one',
              schema: { type: 'string', enum: ['true'] },
            },
          },
          content: jobContent,
        },
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
      let submitted: { job: JobRow; deduplicated: boolean };
      if (key) {
        // The Idempotency-Key is looked at first: a replay answers the job its first request created. A first request
        // answered by a live job's dedupe_key creates nothing, so its Idempotency-Key names no job and is not kept.
        const hash = requestHash(spec);
        const stored = ledger.clientIdempotencyKey(key);
        const replay = async () => {
          const first = await ledger.findByClientKey(db, principal.tenant, stored);
          if (!first) return undefined;
          // A key names its first job for 24 h (by the database's clock); after that it is free for a new one.
          if (first.expired) {
            await ledger.expireIdempotencyKey(db, principal.tenant, stored);
            return undefined;
          }
          if (first.job.request_hash !== hash)
            throw problem.conflict('This Idempotency-Key was used with a different request body.');
          return c.json(ledger.toApiJob(first.job), 200, { Location: `/v1/jobs/${first.job.id}` });
        };
        const earlier = await replay();
        if (earlier) return earlier;
        try {
          const { jobs, deduplicated } = await submitDeduped(deps, principal.tenant, [row], {
            idempotency_key: stored,
            request_hash: hash,
          });
          submitted = { job: jobs[0], deduplicated: deduplicated[0] };
        } catch (err) {
          // A concurrent request with the same key won the insert.
          if ((err as { code?: string }).code === '23505') {
            const raced = await replay();
            if (raced) return raced;
          }
          throw err;
        }
      } else {
        submitted = await submitOne(principal.tenant, row);
      }
      const { job, deduplicated } = submitted;
      const location = `/v1/jobs/${job.id}`;
      if (deduplicated) return c.json(ledger.toApiJob(job), 200, { Location: location, 'Dedupe-Hit': 'true' });
      return c.json(ledger.toApiJob(job), 202, { Location: location });
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
          description:
            'Accepted. An item whose `dedupe_key` names a live job of the tenant (or an earlier item of this request) ' +
            'is answered by that job, in its place; `deduplicated` lists the indexes of those items.',
          content: {
            'application/json': {
              schema: z.object({ jobs: z.array(JobSchema), deduplicated: z.array(z.number().int()) }),
            },
          },
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
      const { jobs: inserted, deduplicated } = await submitDeduped(deps, c.get('principal').tenant, rows);
      return c.json(
        { jobs: inserted.map(ledger.toApiJob), deduplicated: deduplicated.flatMap((hit, i) => (hit ? [i] : [])) },
        202,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs',
      summary: 'List and search jobs, newest first',
      description:
        "Filters combine. `q` matches a job id or id prefix, or text inside payload, result or error (an email address, a user id, a file id), case-insensitively. `tenant` narrows an operator's or viewer's search to one tenant; a client key always searches its own tenant's jobs.",
      security,
      request: { query: SearchQuery },
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
      const principal = c.get('principal');
      const scope = tenantScope(principal);
      const rows = await searchJobs(db, {
        tenant: scope ?? q.tenant,
        q: q.q,
        type: q.type,
        state: q.state,
        priority: q.priority,
        error_code: q.error_code,
        created_after: q.created_after ? new Date(q.created_after) : undefined,
        created_before: q.created_before ? new Date(q.created_before) : undefined,
        parent_id: q.parent_id?.toLowerCase(),
        dedupe_key: q.dedupe_key,
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
      try {
        const { row, running } = await cancelJob(deps, job);
        return c.json(ledger.toApiJob(row), running ? 202 : 200);
      } finally {
        cache.forget(job.id);
      }
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/jobs/{id}/retry',
      summary: 'Run a failed or cancelled job again',
      description:
        'Queues the job again with a fresh set of attempts. A `run_at` still in the future is kept: the job is ' +
        '`delayed` until then (a cancelled delayed job retried early runs when it was meant to); a past `run_at` is ' +
        'cleared and the job runs now. 409 when the job is not failed or cancelled, or when a worker still holds its ' +
        "last run (it is reporting that run's end to the queue): retry again in a moment.",
      security,
      request: { params: JobIdParam },
      responses: { 202: { description: 'Queued again', content: jobContent }, ...problems(401, 403, 404, 409, 503) },
    }),
    async (c) => {
      const principal = c.get('principal');
      const job = await ownJob(c.req.valid('param').id, principal);
      try {
        return c.json(ledger.toApiJob(await retryJob(deps, job, principal)), 202);
      } finally {
        cache.forget(job.id);
      }
    },
  );

  return app;
}
