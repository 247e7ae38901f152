// Operator tools outside /v1: the Bull Board dashboard at /admin/queues and Prometheus metrics at /metrics.
// Both take an operator (or viewer) key as Bearer, as the password of HTTP Basic so a browser can log in, or a
// console session (src/api/session.ts).
import type { ApiServices } from '../services.js';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { ping } from '../db/index.js';
import { recordAudit } from '../db/audit.js';
import { type AuditTargetKind, WAITING } from '../domain.js';
import { metricsText, registerDependencyProbes, registerQueueDepth } from '../metrics.js';
import { cancelWaiting, queueCounts, queueNames, retryFailed, retryOne } from '../queues/controls.js';
import { SCHEDULES_QUEUE } from '../schedules/index.js';
import { WEBHOOK_QUEUE } from '../webhooks/delivery.js';
import { authenticate, type AuthEnv } from './auth.js';
import { clientAddress } from './client-address.js';
import { problem, ProblemError } from './errors.js';
import { readSession, sameOriginOnly } from './session.js';

export const BOARD_PATH = '/admin/queues';
/** Queues the platform runs for itself: on the board and in queue depth, not steered through /v1/queues. */
const INTERNAL_QUEUES: Record<string, string> = {
  [SCHEDULES_QUEUE]: 'Ticks of the schedules (/v1/schedules); each submits one job',
  [WEBHOOK_QUEUE]: 'Webhook deliveries of finished jobs (callback_url)',
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Operators and viewers: a console session (cookie), or a key as Bearer or Basic whose 401 challenges for Basic alone,
 * which every browser answers with a login prompt. Viewers read and change nothing.
 */
function operatorGuard(deps: ApiServices): MiddlewareHandler<AuthEnv> {
  const auth = authenticate(deps.db, deps.config.API_KEY_SECRET);
  return async (c, next) => {
    const session = c.req.header('authorization') ? undefined : await readSession(deps, c);
    if (session) c.set('principal', session.principal);
    else {
      try {
        await auth(c, async () => {});
      } catch (err) {
        if (err instanceof ProblemError && err.status === 401) {
          throw new ProblemError(
            401,
            'unauthorized',
            `${err.message} Log in with any user name and an operator API key as the password.`,
            {},
            {
              'WWW-Authenticate': 'Basic realm="movie-jobs operators", charset="UTF-8"',
            },
          );
        }
        throw err;
      }
    }
    const role = c.get('principal').role;
    if (role === 'client') throw problem.forbidden('This page is for operators.');
    if (role === 'viewer' && !/^(GET|HEAD)$/.test(c.req.method))
      throw problem.forbidden('A viewer key reads and changes nothing.');
    await next();
  };
}

/** What a dashboard API call did, for the audit log: `PUT …/api/queues/email/<id>/retry` → job retry. */
function describeBoardAction(
  method: string,
  apiPath: string,
): { action: string; target_kind: AuditTargetKind; target: string } {
  const s = apiPath.split('/').filter(Boolean).map(decodeURIComponent);
  if (s[0] === 'queues' && s.length === 2)
    return { action: `dashboard.${s[1]}_all`, target_kind: 'queue', target: '*' };
  if (s[0] === 'queues' && s.length >= 3) {
    const queue = s[1];
    if (s.length === 3) return { action: `dashboard.${s[2]}`, target_kind: 'queue', target: queue };
    if (s[2] === 'retry' || s[2] === 'clean')
      return { action: `dashboard.${s[2]}_${s[3]}`, target_kind: 'queue', target: queue };
    if (s[2] === 'job-schedulers')
      return { action: `dashboard.scheduler_${s[4] ?? method.toLowerCase()}`, target_kind: 'schedule', target: s[3] };
    if (s[2] === 'rate-limit') return { action: `dashboard.rate_limit_${s[3]}`, target_kind: 'queue', target: queue };
    return { action: `dashboard.job_${s.slice(3).join('_')}`, target_kind: 'job', target: s[2] };
  }
  return { action: `dashboard.${method.toLowerCase()}`, target_kind: 'dashboard', target: `/${s.join('/')}` };
}

export function operatorTools(deps: ApiServices) {
  const app = new Hono<AuthEnv>();
  const guard = operatorGuard(deps);
  const jobQueues = queueNames(deps.registry);

  const allQueues = [...jobQueues, ...Object.keys(INTERNAL_QUEUES)];
  registerQueueDepth(() => allQueues.map((name) => ({ name, counts: () => queueCounts(deps.queues, name) })));
  registerDependencyProbes({
    postgres: () => ping(deps.db),
    redis: () => deps.redis.ping(),
  });
  app.get('/metrics', guard, async (c) => {
    const { body, contentType } = await metricsText();
    return c.body(body, 200, { 'Content-Type': contentType, 'Cache-Control': 'no-store' });
  });

  // Cross-site requests first: Bull Board's API takes any content type, and a browser may hold a Basic password.
  app.use(BOARD_PATH, sameOriginOnly(), guard);
  app.use(`${BOARD_PATH}/*`, sameOriginOnly(), guard);

  // Every change made from the dashboard is audited, whoever's code carried it out.
  app.use(`${BOARD_PATH}/api/*`, async (c, next) => {
    await next();
    if (c.req.method === 'GET' || c.res.status >= 400) return;
    const what = describeBoardAction(c.req.method, c.req.path.slice(`${BOARD_PATH}/api`.length));
    await recordAudit(deps.db, {
      actor: c.get('principal'),
      ...what,
      surface: 'dashboard',
      client_addr: clientAddress(c),
      detail: { method: c.req.method, path: c.req.path },
    });
  });

  // Retries and removals go through the ledger first, so workers and the reconciler agree with the dashboard.
  app.put(`${BOARD_PATH}/api/queues/:queue/retry/failed`, async (c, next) => {
    const queue = c.req.param('queue');
    if (!jobQueues.includes(queue)) return next();
    const retried = await retryFailed(deps, queue);
    return c.json({ retried }, 200);
  });
  app.put(`${BOARD_PATH}/api/queues/:queue/:id/retry`, async (c, next) => {
    const { queue, id } = c.req.param();
    if (!jobQueues.includes(queue) || !UUID.test(id)) return next();
    const retried = await retryOne(deps, id.toLowerCase());
    if (!retried.ok && retried.reason === 'locked')
      return c.json({ error: 'A worker still holds this job; retry it once it has finished.' }, 409);
    if (!retried.ok) return next();
    return c.json({}, 200);
  });
  // Removing waiting jobs in Redis alone would have the reconciler put them back: the ledger cancels them first.
  app.put(`${BOARD_PATH}/api/queues/:queue/:id/clean`, async (c, next) => {
    const { queue, id } = c.req.param();
    if (jobQueues.includes(queue) && UUID.test(id)) await cancelWaiting(deps, queue, id.toLowerCase());
    return next();
  });
  for (const wipe of ['empty', 'obliterate']) {
    app.put(`${BOARD_PATH}/api/queues/:queue/${wipe}`, async (c, next) => {
      const queue = c.req.param('queue');
      // BullMQ's drain (empty) leaves delayed jobs; obliterate takes everything.
      if (jobQueues.includes(queue))
        await cancelWaiting(deps, queue, undefined, wipe === 'empty' ? ['queued'] : WAITING);
      return next();
    });
  }

  // Bull Board's page links a Google Fonts stylesheet; no page of ours may need the internet, and its CSS falls back
  // to the system fonts without it.
  const noFontCdn: MiddlewareHandler<AuthEnv> = async (c, next) => {
    await next();
    if (c.req.method !== 'GET' || !c.res.headers.get('content-type')?.startsWith('text/html')) return;
    const html = (await c.res.text()).replace(/<link [^>]*href="https:\/\/fonts\.googleapis\.com[^>]*>/g, '');
    const headers = new Headers(c.res.headers);
    headers.delete('content-length');
    c.res = new Response(html, { status: c.res.status, headers });
  };
  app.use(BOARD_PATH, noFontCdn);
  app.use(`${BOARD_PATH}/*`, noFontCdn);

  // Two boards on one path: viewers get Bull Board's read-only mode (no action buttons, actions refused).
  const board = (readOnlyMode: boolean) => {
    const serverAdapter = new HonoAdapter(serveStatic).setBasePath(BOARD_PATH);
    createBullBoard({
      queues: [
        ...jobQueues.map(
          (name) =>
            new BullMQAdapter(deps.queues.get(name), {
              description: deps.registry.get(name)?.description ?? '',
              readOnlyMode,
            }),
        ),
        ...Object.entries(INTERNAL_QUEUES).map(
          ([name, description]) => new BullMQAdapter(deps.queues.get(name), { description, readOnlyMode }),
        ),
      ],
      serverAdapter,
      options: { uiConfig: { boardTitle: 'movie-jobs' } },
    });
    return new Hono().route(BOARD_PATH, serverAdapter.registerPlugin());
  };
  const full = board(false);
  const readOnly = board(true);
  const dispatch = (c: Context<AuthEnv>) =>
    (c.get('principal').role === 'viewer' ? readOnly : full).fetch(c.req.raw, c.env);
  app.all(BOARD_PATH, dispatch);
  app.all(`${BOARD_PATH}/*`, dispatch);
  return app;
}
