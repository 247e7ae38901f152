import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import { recordAudit } from '../../db/audit.js';
import { deleteSchedule, findSchedule, listSchedules, saveSchedule } from '../../db/schedules.js';
import { tenantExists } from '../../db/tenants.js';
import type { ScheduleRow } from '../../db/types.js';
import { PRIORITIES } from '../../domain.js';
import {
  checkSchedule,
  installScheduler,
  nextRuns,
  SCHEDULE_NAME,
  scheduleSpec,
  uninstallScheduler,
} from '../../schedules/index.js';
import { requireOperator, requireOperatorRead } from '../auth.js';
import { clientAddress } from '../client-address.js';
import { problem } from '../errors.js';
import { problems, router, security } from '../openapi.js';

const ScheduleSchema = z
  .object({
    name: z.string(),
    tenant: z.string(),
    type: z.string(),
    payload: z.unknown(),
    priority: z.enum(PRIORITIES),
    cron: z.string().nullable(),
    every_ms: z.number().int().nullable(),
    tz: z.string().nullable(),
    next_run_at: z
      .string()
      .nullable()
      .openapi({ description: 'When BullMQ fires it next; null when Redis has no scheduler for it (yet)' }),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi('Schedule');

// Rebuilt from the shape so the schema is made after @hono/zod-openapi has extended zod, whatever the import order.
const SpecSchema = z.strictObject(scheduleSpec.shape).openapi('ScheduleSubmission', {
  description:
    'Exactly one of `cron` (5 or 6 fields; `tz` an IANA zone, default UTC) or `every_ms` (≥ 1000). The job is checked as `POST /v1/jobs` would check it.',
  example: { type: 'recommendations', payload: { all_users: true }, cron: '0 3 * * *', tz: 'Europe/Paris' },
});

const NameParam = z.object({
  name: z.string().openapi({ param: { name: 'name', in: 'path' }, example: 'nightly-recommendations' }),
});
const content = { 'application/json': { schema: ScheduleSchema } };
const operatorOnly = requireOperator();
const operatorRead = requireOperatorRead();

function toApi(s: ScheduleRow, next: number | undefined) {
  return {
    name: s.name,
    tenant: s.tenant,
    type: s.type,
    payload: s.payload,
    priority: s.priority,
    cron: s.cron,
    every_ms: s.every_ms === null ? null : Number(s.every_ms),
    tz: s.tz,
    next_run_at: next ? new Date(next).toISOString() : null,
    created_at: s.created_at.toISOString(),
    updated_at: s.updated_at.toISOString(),
  };
}

export function schedulesRoutes(deps: ApiServices) {
  const app = router();
  const { db } = deps;

  const existing = async (name: string) => {
    const row = SCHEDULE_NAME.test(name) ? await findSchedule(db, name) : undefined;
    if (!row) throw problem.notFound('schedule');
    return row;
  };
  const redisUp = () => {
    if (deps.redis.status !== 'ready')
      throw problem.unavailable('The queue (Redis) is unreachable; try again shortly.');
  };

  app.openapi(
    createRoute({
      method: 'get',
      path: '/schedules',
      summary: 'Every schedule, with its next run (operators)',
      security,
      middleware: operatorRead,
      responses: {
        200: {
          description: 'The schedules',
          content: { 'application/json': { schema: z.object({ items: z.array(ScheduleSchema) }) } },
        },
        ...problems(401, 403),
      },
    }),
    async (c) => {
      const [rows, next] = await Promise.all([
        listSchedules(db),
        nextRuns(deps.queues).catch(() => new Map<string, number | undefined>()),
      ]);
      return c.json({ items: rows.map((r) => toApi(r, next.get(r.name))) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/schedules/{name}',
      summary: 'One schedule (operators)',
      security,
      middleware: operatorRead,
      request: { params: NameParam },
      responses: { 200: { description: 'The schedule', content }, ...problems(401, 403, 404) },
    }),
    async (c) => {
      const row = await existing(c.req.valid('param').name);
      const next = await nextRuns(deps.queues).catch(() => new Map<string, number | undefined>());
      return c.json(toApi(row, next.get(row.name)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/schedules/{name}',
      summary:
        'Create or replace a schedule: each tick submits one ordinary job, however many workers run (operators; audited)',
      security,
      middleware: operatorOnly,
      request: { params: NameParam, body: { required: true, content: { 'application/json': { schema: SpecSchema } } } },
      responses: {
        200: { description: 'Replaced', content },
        201: { description: 'Created', content },
        ...problems(400, 401, 403, 422, 503),
      },
    }),
    async (c) => {
      const { name } = c.req.valid('param');
      const spec = c.req.valid('json');
      const principal = c.get('principal');
      if (!SCHEDULE_NAME.test(name))
        throw problem.validation([{ path: 'name', message: `must match ${SCHEDULE_NAME}` }]);
      const { issues, unavailable, payload } = checkSchedule(deps.registry, spec);
      const tenant = spec.tenant ?? principal.tenant;
      if (spec.tenant && !(await tenantExists(db, spec.tenant))) {
        issues.push({ path: 'tenant', message: `no tenant named '${spec.tenant}'` });
      }
      if (issues.length) {
        if (unavailable)
          throw problem.unprocessable(
            'type-unavailable',
            `Job type '${spec.type}' has no processor on this platform yet.`,
            { errors: issues },
          );
        const cron = issues.find((i) => i.path === 'cron' && spec.cron !== undefined && i.message.startsWith(`'`));
        throw problem.validation(
          issues,
          cron ? `The cron expression '${spec.cron}' is not valid.` : 'The schedule is not valid.',
        );
      }
      redisUp();
      const { row, created } = await saveSchedule(db, {
        name,
        tenant,
        type: spec.type,
        payload,
        priority: spec.priority,
        cron: spec.cron ?? null,
        every_ms: spec.every_ms ?? null,
        tz: spec.cron ? (spec.tz ?? null) : null,
      });
      // PostgreSQL first: should this fail, the workers' periodic sync installs the scheduler from the row.
      await installScheduler(deps.queues, row);
      await recordAudit(db, {
        actor: principal,
        surface: 'api',
        client_addr: clientAddress(c),
        action: created ? 'schedule.create' : 'schedule.update',
        target_kind: 'schedule',
        target: name,
        detail: spec,
      });
      const next = await nextRuns(deps.queues).catch(() => new Map<string, number | undefined>());
      return c.json(toApi(row, next.get(name)), created ? 201 : 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/schedules/{name}',
      summary: 'Remove a schedule; jobs it already made are untouched (operators; audited)',
      security,
      middleware: operatorOnly,
      request: { params: NameParam },
      responses: { 204: { description: 'Removed' }, ...problems(401, 403, 404, 503) },
    }),
    async (c) => {
      const { name } = c.req.valid('param');
      await existing(name);
      redisUp();
      const row = await deleteSchedule(db, name);
      if (!row) throw problem.notFound('schedule');
      await uninstallScheduler(deps.queues, name);
      await recordAudit(db, {
        actor: c.get('principal'),
        surface: 'api',
        client_addr: clientAddress(c),
        action: 'schedule.delete',
        target_kind: 'schedule',
        target: name,
        detail: toApi(row, undefined),
      });
      return c.body(null, 204);
    },
  );

  return app;
}
