import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import { recordAudit } from '../../db/audit.js';
import { queueInfo, queueNames, retryFailed } from '../../queues/controls.js';
import { requireOperator, requireOperatorRead } from '../auth.js';
import { clientAddress } from '../client-address.js';
import { problem } from '../errors.js';
import { problems, router, security } from '../openapi.js';

const QueueSchema = z
  .object({
    name: z.string(),
    paused: z.boolean(),
    counts: z.object({
      waiting: z.number().int(),
      active: z.number().int(),
      delayed: z.number().int(),
      failed: z.number().int(),
      completed: z.number().int(),
    }),
    workers: z
      .number()
      .int()
      .openapi({ description: 'Worker connections serving this queue now, across all processes' }),
  })
  .openapi('Queue');

const QueueParam = z.object({ name: z.string().openapi({ param: { name: 'name', in: 'path' }, example: 'email' }) });

const operatorOnly = requireOperator();
const operatorRead = requireOperatorRead();

export function queuesRoutes(deps: ApiServices) {
  const app = router();

  const known = (name: string) => {
    if (!queueNames(deps.registry).includes(name)) throw problem.notFound('queue');
    return name;
  };

  app.openapi(
    createRoute({
      method: 'get',
      path: '/queues',
      summary: 'Every queue: counts per state, paused, live workers (operators)',
      security,
      middleware: operatorRead,
      responses: {
        200: { description: 'The queues', content: { 'application/json': { schema: z.array(QueueSchema) } } },
        ...problems(401, 403, 503),
      },
    }),
    async (c) => c.json(await Promise.all(queueNames(deps.registry).map((n) => queueInfo(deps.queues, n))), 200),
  );

  for (const action of ['pause', 'resume'] as const) {
    app.openapi(
      createRoute({
        method: 'post',
        path: `/queues/{name}/${action}`,
        summary:
          action === 'pause'
            ? 'Stop the queue from starting jobs (running ones finish); audited'
            : 'Let the queue start jobs again; audited',
        security,
        middleware: operatorOnly,
        request: { params: QueueParam },
        responses: {
          200: { description: 'The queue now', content: { 'application/json': { schema: QueueSchema } } },
          ...problems(401, 403, 404, 503),
        },
      }),
      async (c) => {
        const name = known(c.req.valid('param').name);
        const queue = deps.queues.get(name);
        await (action === 'pause' ? queue.pause() : queue.resume());
        await recordAudit(deps.db, {
          actor: c.get('principal'),
          surface: 'api',
          client_addr: clientAddress(c),
          action: `queue.${action}`,
          target_kind: 'queue',
          target: name,
        });
        return c.json(await queueInfo(deps.queues, name), 200);
      },
    );
  }

  app.openapi(
    createRoute({
      method: 'post',
      path: '/queues/{name}/retry-failed',
      summary: "Run every failed job of this queue again, all tenants' (ledger and queue); audited",
      security,
      middleware: operatorOnly,
      request: { params: QueueParam },
      responses: {
        200: {
          description: 'How many jobs were queued again',
          content: { 'application/json': { schema: z.object({ queue: z.string(), retried: z.number().int() }) } },
        },
        ...problems(401, 403, 404, 503),
      },
    }),
    async (c) => {
      const name = known(c.req.valid('param').name);
      if (deps.redis.status !== 'ready')
        throw problem.unavailable('The queue (Redis) is unreachable; try again shortly.');
      const retried = await retryFailed(deps, name);
      await recordAudit(deps.db, {
        actor: c.get('principal'),
        surface: 'api',
        client_addr: clientAddress(c),
        action: 'queue.retry_failed',
        target_kind: 'queue',
        target: name,
        detail: { retried },
      });
      return c.json({ queue: name, retried }, 200);
    },
  );

  return app;
}
