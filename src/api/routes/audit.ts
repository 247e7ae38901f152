import { createRoute, z } from '@hono/zod-openapi';
import { listAudit, toApiAudit } from '../../db/audit.js';
import { requireOperator } from '../auth.js';
import type { AppDeps } from '../deps.js';
import { problems, router, security } from '../openapi.js';
import { decodeCursor, encodeCursor, ListQuery } from '../params.js';

const AuditSchema = z
  .object({
    id: z.string(),
    at: z.string(),
    actor: z.object({ key_id: z.string().nullable(), tenant: z.string().nullable(), role: z.string().nullable() }),
    action: z.string().openapi({ example: 'queue.pause' }),
    target_kind: z.enum(['queue', 'job', 'schedule', 'dashboard']),
    target: z.string(),
    detail: z.unknown(),
  })
  .openapi('AuditEntry');

export function auditRoutes(deps: AppDeps) {
  const app = router();

  app.openapi(
    createRoute({
      method: 'get',
      path: '/audit',
      summary: 'Who did what to which queue, job or schedule, newest first (operators)',
      security,
      middleware: requireOperator(),
      request: {
        query: ListQuery.extend({
          target_kind: z.enum(['queue', 'job', 'schedule', 'dashboard']).optional(),
          target: z.string().max(200).optional(),
          action: z.string().max(100).optional(),
        }),
      },
      responses: {
        200: { description: 'A page of entries', content: { 'application/json': { schema: z.object({ items: z.array(AuditSchema), next_cursor: z.string().nullable() }) } } },
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
