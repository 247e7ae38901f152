// A user's latest recommendations (Redis, else PostgreSQL), and a shorthand to compute them.
import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import * as ledger from '../../db/jobs.js';
import { userId } from '../../jobs/recommendations/index.js';
import { PRIORITIES } from '../../domain.js';
import { JobSchema } from '../../jobs/api-job.js';
import { checkSpec, submit } from '../../jobs/submit.js';
import { cacheResults, readCachedResult, type CachedResult } from '../../jobs/recommendations/cache.js';
import { findResult } from '../../jobs/recommendations/data.js';
import { problem } from '../errors.js';
import { problems, router, security } from '../openapi.js';

const UserParam = z.object({ user_id: userId.openapi({ param: { name: 'user_id', in: 'path' }, example: 'u00042' }) });

const ResultSchema = z
  .object({
    user_id: z.string(),
    items: z.array(z.object({ movie_id: z.string(), title: z.string(), score: z.number() })),
    strategy: z.string().openapi({ description: 'item_knn, cold_start:popular_in_genres or cold_start:popular' }),
    generated_at: z.string(),
    job_id: z.string().nullable(),
    stale: z.boolean().openapi({ description: 'The user has rated something since this was generated' }),
  })
  .openapi('Recommendations');

export function recommendationsRoutes(deps: ApiServices) {
  const app = router();
  const { db, redis, config } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/users/{user_id}/recommendations',
      summary: 'The latest result of a recommendations job for this user',
      security,
      request: { params: UserParam },
      responses: {
        200: { description: 'The latest result', content: { 'application/json': { schema: ResultSchema } } },
        ...problems(400, 401, 404),
      },
    }),
    async (c) => {
      const { user_id } = c.req.valid('param');
      const tenant = c.get('principal').tenant;
      // Redis first; it is only a cache, so an unreachable Redis means reading PostgreSQL.
      const hit = await readCachedResult(redis, config, tenant, user_id).catch(() => undefined);
      if (hit) return c.json({ ...hit, stale: false }, 200, { 'X-Cache': 'hit' });
      const row = await findResult(db, tenant, user_id);
      if (!row) throw problem.notFound('recommendations for this user; submit a recommendations job first');
      const result: CachedResult = {
        user_id: row.user_id,
        items: row.items,
        strategy: row.strategy,
        generated_at: row.generated_at.toISOString(),
        job_id: row.job_id,
      };
      if (!row.stale) await cacheResults(redis, config, tenant, [result]).catch(() => {});
      return c.json({ ...result, stale: row.stale }, 200, { 'X-Cache': 'miss' });
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/users/{user_id}/recommendations',
      summary: 'Submit a recommendations job for this user (shorthand for POST /v1/jobs)',
      security,
      request: {
        params: UserParam,
        body: {
          required: false,
          content: {
            'application/json': {
              schema: z.strictObject({
                limit: z.number().int().min(1).max(100).optional(),
                priority: z.enum(PRIORITIES).optional(),
              }),
            },
          },
        },
      },
      responses: {
        202: { description: 'Accepted', content: { 'application/json': { schema: JobSchema } } },
        ...problems(400, 401, 413, 503),
      },
    }),
    async (c) => {
      const { user_id } = c.req.valid('param');
      // An empty body is allowed (the validator only runs for a JSON content type).
      const body = (c.req.header('content-type')?.includes('json') ? c.req.valid('json') : undefined) ?? {};
      const payload = { user_id, ...(body.limit ? { limit: body.limit } : {}) };
      const { row, issues } = checkSpec(deps.registry, {
        type: 'recommendations',
        payload,
        priority: body.priority ?? 'normal',
      });
      if (!row) throw problem.validation(issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
      if (redis.status !== 'ready') throw problem.unavailable('The queue (Redis) is unreachable; try again shortly.');
      const [job] = await submit(deps, c.get('principal').tenant, [row]);
      return c.json(ledger.toApiJob(job), 202, { Location: `/v1/jobs/${job.id}` });
    },
  );

  return app;
}
