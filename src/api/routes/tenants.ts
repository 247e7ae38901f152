// A tenant's fairness limits (src/db/admission.ts): operators change them (audited), viewers read them.
import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import { admissionPolicy, getTenantLimits, setTenantLimits, type TenantLimits, windowOf } from '../../db/admission.js';
import { recordAudit } from '../../db/audit.js';
import { requireOperator, requireOperatorRead } from '../auth.js';
import { clientAddress } from '../client-address.js';
import { problem } from '../errors.js';
import { problems, router, security } from '../openapi.js';

const MAX_CAP = 1_000_000;
const MAX_WEIGHT = 1_000;

const LimitsSchema = z
  .object({
    tenant: z.string(),
    weight: z.number().nullable().openapi({ description: 'Its own weight; null: the default (TENANT_WEIGHT)' }),
    max_running: z
      .record(z.string(), z.number().int())
      .openapi({ description: 'Its own caps on running jobs, by job type; a type not listed has TENANT_MAX_RUNNING' }),
    effective: z
      .array(
        z.object({ type: z.string(), max_running: z.number().int(), weight: z.number(), window: z.number().int() }),
      )
      .openapi({
        description:
          'Per job type, what applies: the cap, the weight, and the window (jobs of the tenant handed to the queue at once: min(cap, ADMISSION_WINDOW × weight))',
      }),
  })
  .openapi('TenantLimits');

const LimitsChange = z
  .strictObject({
    weight: z.number().positive().max(MAX_WEIGHT).nullable().optional().openapi({
      description: 'Its share against other tenants under load (> 0, ≤ 1000); null returns to the default',
    }),
    max_running: z
      .record(z.string(), z.number().int().min(0).max(MAX_CAP).nullable())
      .optional()
      .openapi({ description: 'Caps by job type (0 pauses the type for this tenant); null removes a cap' }),
  })
  .openapi('TenantLimitsChange', { example: { weight: 2, max_running: { email: 5 } } });

const IdParam = z.object({ id: z.string().openapi({ param: { name: 'id', in: 'path' }, example: 'acme' }) });
const content = { 'application/json': { schema: LimitsSchema } };

export function tenantsRoutes(deps: ApiServices) {
  const app = router();
  const { db, config, registry } = deps;
  const policy = admissionPolicy(config);

  const toApi = (tenant: string, l: TenantLimits) => {
    const weight = l.weight ?? policy.weight;
    return {
      tenant,
      weight: l.weight,
      max_running: l.max_running,
      effective: registry.types().map((type) => {
        const cap = l.max_running[type] ?? policy.maxRunning;
        return { type, max_running: cap, weight, window: windowOf(policy, cap, weight) };
      }),
    };
  };

  app.openapi(
    createRoute({
      method: 'get',
      path: '/tenants/{id}/limits',
      summary: "A tenant's fairness limits: weight and caps on running jobs per type (operators and viewers)",
      security,
      middleware: requireOperatorRead(),
      request: { params: IdParam },
      responses: { 200: { description: 'The limits', content }, ...problems(401, 403, 404) },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const limits = await getTenantLimits(db, id);
      if (!limits) throw problem.notFound('tenant');
      return c.json(toApi(id, limits), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/tenants/{id}/limits',
      summary: "Change a tenant's weight or caps; what the body leaves out is kept (operators; audited)",
      security,
      middleware: requireOperator(),
      request: { params: IdParam, body: { required: true, content: { 'application/json': { schema: LimitsChange } } } },
      responses: { 200: { description: 'The limits after the change', content }, ...problems(400, 401, 403, 404) },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const change = c.req.valid('json');
      const unknown = Object.keys(change.max_running ?? {}).filter((t) => !registry.get(t));
      if (unknown.length)
        throw problem.validation(
          unknown.map((t) => ({
            path: `max_running.${t}`,
            message: `unknown job type; one of: ${registry.types().join(', ')}`,
          })),
        );
      const limits = await db.transaction().execute(async (trx) => {
        const after = await setTenantLimits(trx, id, change);
        if (!after) return undefined;
        await recordAudit(trx, {
          actor: c.get('principal'),
          surface: 'api',
          client_addr: clientAddress(c),
          action: 'tenant.limits',
          target_kind: 'tenant',
          target: id,
          detail: change,
        });
        return after;
      });
      if (!limits) throw problem.notFound('tenant');
      return c.json(toApi(id, limits), 200);
    },
  );

  return app;
}
