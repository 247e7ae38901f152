import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { listAudit, recordAudit, toApiAudit } from '../../db/audit.js';
import { findJob } from '../../db/jobs.js';
import { AUDIT_SURFACES, AUDIT_TARGET_KINDS } from '../../domain.js';
import { requireOperatorRead, type AuthEnv } from '../auth.js';
import { clientAddress } from '../client-address.js';
import { problems, router, security } from '../openapi.js';
import { decodeCursor, encodeCursor, ListQuery } from '../params.js';

const AuditSchema = z
  .object({
    id: z.string(),
    at: z.string(),
    actor: z.object({ key_id: z.string().nullable(), tenant: z.string().nullable(), role: z.string().nullable() }),
    action: z.string().openapi({ example: 'queue.pause' }),
    target_kind: z.enum(AUDIT_TARGET_KINDS),
    target: z.string(),
    detail: z.unknown(),
    surface: z.enum(AUDIT_SURFACES).nullable().openapi({
      description: 'From where: the surface that carried the action out (null: recorded before it was kept)',
    }),
    client_addr: z.string().nullable().openapi({ description: "The client's network address, when it came over HTTP" }),
  })
  .openapi('AuditEntry');

export function auditRoutes(deps: ApiServices) {
  const app = router();

  app.openapi(
    createRoute({
      method: 'get',
      path: '/audit',
      summary: 'Who did what to which queue, job or schedule, from where, newest first (operators and viewers)',
      security,
      middleware: requireOperatorRead(),
      request: {
        query: ListQuery.extend({
          target_kind: z.enum(AUDIT_TARGET_KINDS).optional(),
          target: z.string().max(200).optional(),
          action: z.string().max(100).optional(),
        }),
      },
      responses: {
        200: {
          description: 'A page of entries',
          content: {
            'application/json': {
              schema: z.object({ items: z.array(AuditSchema), next_cursor: z.string().nullable() }),
            },
          },
        },
        ...problems(400, 401, 403),
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const rows = await listAudit(deps.db, {
        before: q.cursor ? decodeCursor(q.cursor) : undefined,
        limit: q.limit + 1,
        target_kind: q.target_kind,
        target: q.target,
        action: q.action,
      });
      const page = rows.slice(0, q.limit);
      const next_cursor = rows.length > q.limit ? encodeCursor(page[page.length - 1].id) : null;
      return c.json({ items: page.map(toApiAudit), next_cursor }, 200);
    },
  );

  return app;
}

/**
 * Audits what was done to a job through the API (cancel, retry), by whom. Mounted on `/v1/jobs/:id/:action` after
 * authentication; records only actions that succeeded.
 */
export function auditJobActions(deps: ApiServices): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    // Read before next(): afterwards the params are the handler's, whose pattern has no `action`.
    const action = c.req.param('action');
    const id = c.req.param('id')?.toLowerCase();
    await next();
    if (c.req.method !== 'POST' || (action !== 'cancel' && action !== 'retry') || !id || c.res.status >= 300) return;
    const job = await findJob(deps.db, id);
    await recordAudit(deps.db, {
      actor: c.get('principal'),
      surface: 'api',
      client_addr: clientAddress(c),
      action: `job.${action}`,
      target_kind: 'job',
      target: id,
      detail: job ? { type: job.type, tenant: job.tenant, state: job.state } : null,
    });
  };
}
