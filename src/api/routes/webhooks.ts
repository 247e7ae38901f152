// Webhooks as clients see them: each delivery try of a job, and the tenant's signing secret.
import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import * as ledger from '../../db/jobs.js';
import { webhookSecretOf } from '../../db/tenants.js';
import { listDeliveries } from '../../db/webhooks.js';
import { WEBHOOK_OUTCOMES } from '../../domain.js';
import { tenantScope } from '../auth.js';
import { problem } from '../errors.js';
import { problems, router, security } from '../openapi.js';
import { assertUuid, JobIdParam } from '../params.js';

const DeliverySchema = z
  .object({
    id: z.number().int(),
    message_id: z.string().openapi({ description: 'The `webhook-id` header: the same on every try of one message' }),
    event: z.string().openapi({ example: 'job.succeeded' }),
    url: z.string(),
    attempt: z.number().int(),
    outcome: z.enum(WEBHOOK_OUTCOMES),
    status_code: z.number().int().nullable(),
    error: z.string().nullable(),
    duration_ms: z.number().int(),
    created_at: z.string(),
  })
  .openapi('WebhookDelivery');

export function webhooksRoutes(deps: ApiServices) {
  const app = router();
  const { db } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/webhooks',
      summary: 'Every webhook delivery try for a job, oldest first',
      security,
      request: { params: JobIdParam },
      responses: {
        200: {
          description: 'The tries',
          content: { 'application/json': { schema: z.object({ items: z.array(DeliverySchema) }) } },
        },
        ...problems(401, 404),
      },
    }),
    async (c) => {
      const job = await ledger.findJob(db, assertUuid(c.req.valid('param').id), tenantScope(c.get('principal')));
      if (!job) throw problem.notFound('job');
      const rows = await listDeliveries(db, job.id);
      const items = rows.map(({ job_id: _j, tenant: _t, created_at, ...r }) => ({
        ...r,
        created_at: created_at.toISOString(),
      }));
      return c.json({ items }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/webhook-secret',
      summary: "The tenant's webhook signing secret (Standard Webhooks, `whsec_…`)",
      description:
        'Verify `webhook-signature` with it, e.g. `new Webhook(secret).verify(body, headers)` from the `standardwebhooks` package.',
      security,
      responses: {
        200: {
          description: 'The secret',
          content: {
            'application/json': {
              schema: z.object({ tenant: z.string(), webhook_secret: z.string() }).openapi('WebhookSecret'),
            },
          },
        },
        ...problems(401),
      },
    }),
    async (c) => {
      const tenant = c.get('principal').tenant;
      const webhook_secret = await webhookSecretOf(db, tenant);
      if (webhook_secret === undefined) throw new Error(`the tenant of an authenticated key is missing: ${tenant}`);
      return c.json({ tenant, webhook_secret }, 200);
    },
  );

  return app;
}
