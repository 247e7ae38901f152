// The HTTP API: thin routes over the ledger and the queues. createApp(deps) has no side effects.
import type { ApiServices } from '../services.js';
import type { IncomingMessage } from 'node:http';
import type { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { requestId } from 'hono/request-id';
import { isDbUnavailable } from '../errors.js';
import { prettyLogs } from '../log.js';
import { httpMetrics } from '../metrics.js';
import { operatorTools } from './admin.js';
import { authenticate, viewersReadOnly, type AuthEnv } from './auth.js';
import { docsRoutes } from './docs.js';
import { fieldErrors, isZodError, problem, ProblemError, problemResponse } from './errors.js';
import { router } from './openapi.js';
import { rateLimitPerKey, tenantQuotas } from './rate-limit.js';
import { isDataException } from './input-guard.js';
import { filesRoutes } from './routes/files.js';
import { healthRoutes } from './routes/health.js';
import { eventsRoutes } from './routes/events.js';
import { jobsRoutes } from './routes/jobs.js';
import { jobHistoryRoutes } from './routes/job-history.js';
import { webhooksRoutes } from './routes/webhooks.js';
import { catalogRoutes } from './routes/catalog.js';
import { recommendationsRoutes } from './routes/recommendations.js';
import { auditJobActions, auditRoutes } from './routes/audit.js';
import { queuesRoutes } from './routes/queues.js';
import { schedulesRoutes } from './routes/schedules.js';
import { tenantsRoutes } from './routes/tenants.js';
import { consoleRoutes } from '../console/routes.js';

export const JSON_LIMIT = 1024 * 1024;

function isRedisUnavailable(err: unknown): boolean {
  const m = String((err as Error)?.message ?? '');
  return /enableOfflineQueue|Connection is closed|ECONNREFUSED|Command timed out|max retries per request|Stream isn't writeable/i.test(
    m,
  );
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

/** The methods some route (not a middleware) answers on `path`: a 405's `Allow`, empty when no route has the path. */
function allowedMethods(app: Hono<AuthEnv>, path: string): string[] {
  const allow = METHODS.filter((m) => app.router.match(m, path)[0].some(([[, route]]) => route.method !== 'ALL'));
  return allow.includes('GET') ? [...allow, 'HEAD'] : allow;
}

export function createApp(deps: ApiServices) {
  const app = router();
  const { log } = deps;
  // One line per request at a terminal; in production only failures (a line per request is a write per request).
  const requestLevel = prettyLogs(deps.config) ? 'info' : 'debug';

  app.use('*', requestId());
  app.use('*', httpMetrics());
  app.use('*', async (c, next) => {
    const start = performance.now();
    await next();
    const ms = Math.round((performance.now() - start) * 10) / 10;
    const level = c.res.status >= 500 ? 'error' : requestLevel;
    if (log.isLevelEnabled(level))
      log[level](
        { req_id: c.get('requestId'), method: c.req.method, path: c.req.path, status: c.res.status, ms },
        `${c.req.method} ${c.req.path} ${c.res.status} ${ms} ms`,
      );
  });

  app.route('/', healthRoutes(deps));
  app.get('/', (c) =>
    c.json({
      name: 'movie-jobs',
      description: 'Background jobs for the movie-recommendation product: recommendations, email, images, reports.',
      docs: '/docs',
      openapi: '/openapi.json',
      health: '/healthz',
      ready: '/readyz',
    }),
  );

  // Size limits before any parsing. Uploads (/v1/files) set their own, larger limit.
  const jsonLimit = bodyLimit({
    maxSize: JSON_LIMIT,
    onError: () => {
      throw problem.tooLarge(`JSON bodies are limited to ${JSON_LIMIT} bytes.`);
    },
  });
  app.use('/v1/*', async (c, next) => {
    if (c.req.path.startsWith('/v1/files')) return next();
    // A declared length is checked from the header alone: hono's bodyLimit reads `raw.body`, which makes
    // @hono/node-server build a full WHATWG Request for every request (its cost: docs/performance.md).
    if (!c.req.header('transfer-encoding')) {
      const length = c.req.header('content-length');
      if (length !== undefined) {
        if (Number(length) > JSON_LIMIT) throw problem.tooLarge(`JSON bodies are limited to ${JSON_LIMIT} bytes.`);
        return next();
      }
      if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    }
    return jsonLimit(c, next);
  });
  app.use('/v1/*', authenticate(deps.db, deps.config.API_KEY_SECRET));
  app.use('/v1/*', viewersReadOnly());
  app.use('/v1/*', rateLimitPerKey(deps));
  app.use('/v1/*', tenantQuotas(deps));
  app.use('/v1/jobs/:id/:action', auditJobActions(deps));
  app.route('/v1', jobsRoutes(deps));
  app.route('/v1', jobHistoryRoutes(deps));
  app.route('/v1', filesRoutes(deps));
  app.route('/v1', catalogRoutes(deps));
  app.route('/v1', recommendationsRoutes(deps));
  app.route('/v1', queuesRoutes(deps));
  app.route('/v1', schedulesRoutes(deps));
  app.route('/v1', tenantsRoutes(deps));
  app.route('/v1', auditRoutes(deps));
  app.route('/v1', eventsRoutes(deps));
  app.route('/v1', webhooksRoutes(deps));
  // /admin/queues (Bull Board) and /metrics: operator key as Bearer or HTTP Basic password.
  app.route('/', operatorTools(deps));
  // The console (server-rendered pages; browser session and CSRF token, src/api/session.ts).
  app.route('/console', consoleRoutes(deps));

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API key from `npm run cli -- keys create`',
  });
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'movie-jobs',
      version: '1.0.0',
      description:
        'Background-job platform for the movie-recommendation product. Its contract: docs/api.md in the repository.',
    },
  });
  app.route('/', docsRoutes());

  app.notFound((c) => {
    const allow = allowedMethods(app, c.req.path);
    if (allow.length)
      return problemResponse(
        c,
        405,
        { slug: 'method-not-allowed', detail: `${c.req.path} takes ${allow.join(', ')}, not ${c.req.method}.` },
        { Allow: allow.join(', ') },
      );
    return problemResponse(c, 404, { slug: 'not-found', detail: `No route for ${c.req.method} ${c.req.path}.` });
  });

  app.onError((err, c) => {
    if (err instanceof ProblemError) {
      return problemResponse(c, err.status, { slug: err.slug, detail: err.message, ...err.extra }, err.headers);
    }
    if (err instanceof HTTPException) {
      // Hono's own (e.g. malformed JSON from the validator): keep the status, speak problem+json.
      const status = err.status;
      const detail =
        status === 400
          ? 'The body is not valid JSON.'
          : status === 415
            ? 'Send the body as JSON, with the header Content-Type: application/json.'
            : err.message || 'Request error.';
      return problemResponse(c, status, { slug: status === 400 ? 'malformed' : 'http-error', detail });
    }
    if (isZodError(err))
      return problemResponse(c, 400, {
        slug: 'validation',
        detail: 'The request is not valid.',
        errors: fieldErrors(err),
      });
    if (isDataException(err))
      return problemResponse(c, 400, {
        slug: 'unstorable',
        detail:
          'The request holds a value that cannot be stored (e.g. a NUL character, or a number or date out of range).',
      });
    // The client hung up mid-request (its body read fails with ECONNRESET): nobody will read the answer, and it is
    // not PostgreSQL being down.
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    if (incoming && !incoming.complete && incoming.destroyed) {
      log.debug({ err: String(err), req_id: c.get('requestId') }, 'client closed the request');
      return problemResponse(c, 400, { slug: 'interrupted', detail: 'The request was interrupted.' });
    }
    if (isDbUnavailable(err)) {
      log.warn({ err: String(err), req_id: c.get('requestId') }, 'PostgreSQL unavailable');
      return problemResponse(
        c,
        503,
        { slug: 'unavailable', detail: 'The database (PostgreSQL) is unreachable; try again shortly.' },
        { 'Retry-After': '5' },
      );
    }
    if (isRedisUnavailable(err)) {
      log.warn({ err: String(err), req_id: c.get('requestId') }, 'Redis unavailable');
      return problemResponse(
        c,
        503,
        { slug: 'unavailable', detail: 'The queue (Redis) is unreachable; try again shortly.' },
        { 'Retry-After': '5' },
      );
    }
    log.error({ err, req_id: c.get('requestId'), path: c.req.path }, 'unhandled error');
    return problemResponse(c, 500, {
      slug: 'internal',
      detail: 'Something went wrong on our side; it has been logged.',
    });
  });

  return app;
}

export type App = ReturnType<typeof createApp>;
export type { AuthEnv };
