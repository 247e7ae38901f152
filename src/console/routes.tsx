// The console at /console: server-rendered pages over the ledger for operators, viewers and tenants' own keys.
// Log in with an API key (a session cookie, src/api/session.ts); every form that changes something carries the
// session's CSRF token and must come from this origin. Cancel, retry and queue controls go through the same
// functions as the API routes and are audited with surface "console".
import type { ApiServices } from '../services.js';
import { readFileSync } from 'node:fs';
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { z } from 'zod';
import type { Principal } from '../auth/keys.js';
import { jobAudit, recordAudit, toApiAudit } from '../db/audit.js';
import {
  backlog,
  emailRecipients,
  jobChildren,
  perMinute,
  scheduleRuns,
  tenantLoads,
  typeStats,
  webhookTries,
} from '../db/console.js';
import { isDbUnavailable } from '../errors.js';
import { jobLogs } from '../db/job-logs.js';
import { findJob, toApiJob } from '../db/jobs.js';
import { SEARCH_MIN_CHARS, searchJobs } from '../db/search.js';
import { jobTimeline } from '../db/timeline.js';
import { queueInfo, queueNames, retryFailed } from '../queues/controls.js';
import { listSchedules } from '../db/schedules.js';
import { nextRuns } from '../schedules/index.js';
import { BOARD_PATH } from '../api/admin.js';
import { clientAddress } from '../api/client-address.js';
import { problem, ProblemError, problemResponse } from '../api/errors.js';
import { assertRedisUp, cancelJob, retryJob } from '../api/job-actions.js';
import { decodeCursor, encodeCursor } from '../api/params.js';
import { eventsRoutes } from '../api/routes/events.js';
import {
  csrfTokenMatches,
  endSession,
  readSession,
  sameOriginOnly,
  startSession,
  type SessionEnv,
} from '../api/session.js';
import { traceIdOf } from '../tracing/index.js';
import { JOB_STATES, PRIORITIES } from '../domain.js';
import { JobPage, SearchPage, type SearchForm } from './jobs.js';
import { BASE, jobHref, Layout, type PageCtx, seesAll } from './layout.js';
import { OverviewPage, QueuesPage, SchedulesPage, TenantsPage } from './ops.js';
import { keys } from '../queues/keys.js';

const wantsHtml = (c: Context) => (c.req.header('accept') ?? '').includes('text/html');
const asset = (name: string) => readFileSync(new URL(`./assets/${name}`, import.meta.url));
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PAGE = 50;

const blank = (v: unknown) => (v === '' ? undefined : v);
/** `datetime-local` inputs carry no zone: the console reads them as UTC, and says so on the form. */
const localTime = z.preprocess(
  blank,
  z
    .string()
    .max(40)
    .transform((s, ctx) => {
      const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`);
      if (Number.isNaN(d.getTime())) {
        ctx.addIssue({ code: 'custom', message: 'not a date and time' });
        return z.NEVER;
      }
      return d;
    })
    .optional(),
);
const text = (max: number) => z.preprocess(blank, z.string().max(max).optional());
const SearchQuery = z.object({
  // As in GET /v1/jobs: shorter text cannot use the trigram index (src/db/search.ts).
  q: z.preprocess(
    (v) => blank(typeof v === 'string' ? v.trim() : v),
    z.string().min(SEARCH_MIN_CHARS, `type at least ${SEARCH_MIN_CHARS} characters`).max(200).optional(),
  ),
  tenant: text(63),
  type: text(40),
  state: z.preprocess(blank, z.enum(JOB_STATES).optional()),
  priority: z.preprocess(blank, z.enum(PRIORITIES).optional()),
  error_code: text(100),
  created_after: localTime,
  created_before: localTime,
  parent_id: z.preprocess(blank, z.string().regex(UUID, 'not a job id').optional()),
  dedupe_key: text(200),
  cursor: text(200),
});

function LoginPage(props: { error?: string }) {
  return (
    <Layout title="Log in">
      <form method="post" action={`${BASE}/login`} class="login">
        <label for="key">API key</label>
        <input id="key" type="password" name="key" autocomplete="current-password" required autofocus />
        {props.error && (
          <p class="error" role="alert">
            {props.error}
          </p>
        )}
        <button type="submit">Log in</button>
        <p class="muted">Operator and viewer keys see every tenant; a tenant's key sees its own jobs.</p>
      </form>
    </Layout>
  );
}

function ErrorPage(props: { status: number; detail: string; ctx?: PageCtx }) {
  const titles: Record<number, string> = { 400: 'Bad request', 403: 'Not allowed', 404: 'Not found', 409: 'Conflict' };
  return (
    <Layout title={titles[props.status] ?? 'Error'} ctx={props.ctx}>
      <p role="alert">{props.detail}</p>
      <p>
        <a href={`${BASE}/jobs`}>Back to the jobs</a>
      </p>
    </Layout>
  );
}

export function consoleRoutes(deps: ApiServices) {
  const app = new Hono<SessionEnv>();
  const { db } = deps;
  const css = asset('console.css');
  const js = asset('console.js');
  const ctxOf = (c: Context<SessionEnv>): PageCtx => ({ principal: c.get('principal'), csrf: c.get('session').csrf });
  const scope = (p: Principal) => (seesAll(p) ? undefined : p.tenant);
  const operatorsAndViewers: MiddlewareHandler<SessionEnv> = async (c, next) => {
    if (!seesAll(c.get('principal'))) throw problem.forbidden('This page is for operator and viewer keys.');
    await next();
  };
  const operatorsOnly: MiddlewareHandler<SessionEnv> = async (c, next) => {
    if (c.get('principal').role !== 'operator') throw problem.forbidden('Only operator keys may do this.');
    await next();
  };
  const audit = (
    c: Context<SessionEnv>,
    action: string,
    target_kind: 'job' | 'queue',
    target: string,
    detail: unknown,
  ) =>
    recordAudit(db, {
      actor: c.get('principal'),
      action,
      target_kind,
      target,
      detail,
      surface: 'console',
      client_addr: clientAddress(c),
    });

  // Pages for browsers; problem+json, as everywhere else, for any other client.
  app.onError((err, c) => {
    const html = wantsHtml(c);
    const ctx = c.get('session') ? ctxOf(c) : undefined;
    if (err instanceof ProblemError || err instanceof HTTPException) {
      const status = err.status;
      const extra = err instanceof ProblemError ? err.extra : {};
      const headers = err instanceof ProblemError ? err.headers : {};
      if (!html)
        return problemResponse(
          c,
          status,
          { slug: err instanceof ProblemError ? err.slug : 'http-error', detail: err.message, ...extra },
          headers,
        );
      const detail = extra.errors
        ? `${err.message} ${extra.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`
        : err.message;
      for (const [k, v] of Object.entries(headers)) c.header(k, v);
      return c.html(<ErrorPage status={status} detail={detail} ctx={ctx} />, status);
    }
    if (isDbUnavailable(err)) {
      const detail = 'The database (PostgreSQL) is unreachable; try again shortly.';
      if (!html) return problemResponse(c, 503, { slug: 'unavailable', detail }, { 'Retry-After': '5' });
      return c.html(<ErrorPage status={503} detail={detail} ctx={ctx} />, 503);
    }
    deps.log.error({ err, path: c.req.path }, 'console: unhandled error');
    const detail = 'Something went wrong on our side; it has been logged.';
    if (!html) return problemResponse(c, 500, { slug: 'internal', detail });
    return c.html(<ErrorPage status={500} detail={detail} ctx={ctx} />, 500);
  });

  const assetHeaders = (type: string) => ({ 'Content-Type': type, 'Cache-Control': 'no-cache' });
  app.get('/assets/console.css', (c) => c.body(css, 200, assetHeaders('text/css; charset=utf-8')));
  app.get('/assets/console.js', (c) => c.body(js, 200, assetHeaders('text/javascript; charset=utf-8')));

  // Login, logout and every other change: from this origin only.
  app.use('*', sameOriginOnly());
  app.get('/login', (c) => c.html(<LoginPage />));
  app.post('/login', async (c) => {
    const body = await c.req.parseBody();
    const principal = await startSession(deps, c, typeof body.key === 'string' ? body.key.trim() : '');
    if (!principal) {
      const refused = problem.unauthorized('That key is unknown or revoked.');
      if (!wantsHtml(c)) throw refused;
      return c.html(<LoginPage error={refused.message} />, 401, refused.headers);
    }
    return c.redirect(BASE, 303);
  });

  // Everything below needs a live session; a change also needs the session's CSRF token.
  app.use('*', async (c, next) => {
    const session = await readSession(deps, c);
    if (!session) {
      if (c.req.method === 'GET') return c.redirect(`${BASE}/login`, 303);
      throw problem.unauthorized('Log in first.');
    }
    c.set('session', session);
    c.set('principal', session.principal);
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      const body = await c.req.parseBody();
      if (!csrfTokenMatches(session, body._csrf))
        throw problem.forbidden('The form has no valid CSRF token; reload the page and try again.');
    }
    await next();
  });

  app.post('/logout', async (c) => {
    await endSession(deps, c);
    return c.redirect(`${BASE}/login`, 303);
  });

  // Live progress: the API's own event stream (src/api/routes/events.ts), authenticated by the session above.
  app.route('/', eventsRoutes(deps) as unknown as Hono<SessionEnv>);

  app.get('/', async (c) => {
    const tenant = scope(c.get('principal'));
    const windows = await Promise.all(
      [
        { label: 'Last hour', minutes: 60 },
        { label: 'Last day', minutes: 1440 },
      ].map(async (w) => ({
        ...w,
        stats: await typeStats(db, w.minutes, tenant),
        points: await perMinute(db, w.minutes, tenant),
      })),
    );
    const waiting = await backlog(db, tenant);
    return c.html(
      <OverviewPage
        ctx={ctxOf(c)}
        types={deps.registry.types()}
        windows={windows}
        backlog={new Map(waiting.map((b) => [b.type, b]))}
      />,
    );
  });

  app.get('/jobs', async (c) => {
    const parsed = SearchQuery.safeParse(c.req.query());
    if (!parsed.success)
      throw problem.validation(parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
    const q = parsed.data;
    const principal = c.get('principal');
    const rows = await searchJobs(db, {
      tenant: seesAll(principal) ? q.tenant : principal.tenant,
      q: q.q,
      type: q.type,
      state: q.state,
      priority: q.priority,
      error_code: q.error_code,
      created_after: q.created_after,
      created_before: q.created_before,
      parent_id: q.parent_id?.toLowerCase(),
      dedupe_key: q.dedupe_key,
      before: q.cursor ? decodeCursor(q.cursor) : undefined,
      limit: PAGE + 1,
    });
    const page = rows.slice(0, PAGE);
    const form: SearchForm = Object.fromEntries(
      Object.entries(c.req.query()).filter(([k, v]) => k !== 'cursor' && v !== ''),
    ) as SearchForm;
    let nextHref: string | undefined;
    if (rows.length > PAGE) {
      const params = new URLSearchParams(form as Record<string, string>);
      params.set('cursor', encodeCursor(page[page.length - 1].id));
      nextHref = `${BASE}/jobs?${params}`;
    }
    return c.html(
      <SearchPage
        ctx={ctxOf(c)}
        form={form}
        types={deps.registry.types()}
        jobs={page.map(toApiJob)}
        nextHref={nextHref}
      />,
    );
  });

  /** The job if this principal may see it; another tenant's job, like a malformed id, is not found. */
  const visibleJob = async (c: Context<SessionEnv>) => {
    const id = c.req.param('id') ?? '';
    const job = UUID.test(id) ? await findJob(db, id.toLowerCase(), scope(c.get('principal'))) : undefined;
    if (!job) throw problem.notFound('job');
    return job;
  };

  app.get('/jobs/:id', async (c) => {
    const row = await visibleJob(c);
    const [parent, children, webhooks, emails, auditRows, timeline, logs] = await Promise.all([
      row.parent_id ? findJob(db, row.parent_id, scope(c.get('principal'))) : undefined,
      jobChildren(db, row.id),
      webhookTries(db, row.id),
      emailRecipients(db, row.id),
      jobAudit(db, row.id, 100),
      jobTimeline(db, row.id),
      jobLogs(db, row.id),
    ]);
    return c.html(
      <JobPage
        ctx={ctxOf(c)}
        mayAct={true}
        story={{
          job: toApiJob(row),
          traceId: traceIdOf(row.trace_context),
          admittedAt: row.admitted_at,
          parent: parent && toApiJob(parent),
          children,
          webhooks,
          emails,
          audit: auditRows.map(toApiAudit),
          timeline,
          logs,
        }}
      />,
    );
  });

  // Cancel and retry: operators, and a client key for its own tenant's jobs (as the API allows); viewers never.
  for (const action of ['cancel', 'retry'] as const) {
    app.post(`/jobs/:id/${action}`, async (c) => {
      if (c.get('principal').role === 'viewer') throw problem.forbidden('A viewer key changes nothing.');
      const job = await visibleJob(c);
      const row =
        action === 'cancel' ? (await cancelJob(deps, job)).row : await retryJob(deps, job, c.get('principal'));
      await audit(c, `job.${action}`, 'job', job.id, { type: row.type, tenant: row.tenant, state: row.state });
      return c.redirect(jobHref(job.id), 303);
    });
  }

  app.get('/tenants', operatorsAndViewers, async (c) => {
    const cap = deps.config.TENANT_MAX_IN_FLIGHT;
    const mpLimit = deps.config.TENANT_IMAGE_MEGAPIXELS_PER_MINUTE;
    // The image quota's own counter (src/api/rate-limit.ts), read without consuming.
    const mp = new RateLimiterRedis({
      storeClient: deps.redis,
      keyPrefix: keys(deps.config).rateLimit('image-mp'),
      points: Math.max(1, mpLimit),
      duration: 60,
      rejectIfRedisNotReady: true,
    });
    const loads = await tenantLoads(db);
    const rows = await Promise.all(
      loads.map(async (t) => {
        const used = await mp.get(t.tenant).catch(() => null);
        return { ...t, mpLeft: Math.max(0, mpLimit - (used?.consumedPoints ?? 0)) };
      }),
    );
    return c.html(<TenantsPage ctx={ctxOf(c)} cap={cap} imageMp={mpLimit} rows={rows} />);
  });

  app.get('/schedules', async (c) => {
    const tenant = scope(c.get('principal'));
    const schedules = (await listSchedules(db)).filter((s) => tenant === undefined || s.tenant === tenant);
    const next = await nextRuns(deps.queues).catch(() => new Map<string, number | undefined>());
    const rows = await Promise.all(
      schedules.map(async (s) => ({
        schedule: s,
        next: next.get(s.name),
        runs: await scheduleRuns(db, s.tenant, s.name, 5),
      })),
    );
    return c.html(<SchedulesPage ctx={ctxOf(c)} rows={rows} />);
  });

  const knownQueue = (name: string) => {
    if (!queueNames(deps.registry).includes(name)) throw problem.notFound('queue');
    return name;
  };
  app.get('/queues', operatorsAndViewers, async (c) => {
    const queues = await Promise.all(queueNames(deps.registry).map((n) => queueInfo(deps.queues, n)));
    return c.html(<QueuesPage ctx={ctxOf(c)} queues={queues} board={BOARD_PATH} />);
  });
  for (const action of ['pause', 'resume'] as const) {
    app.post(`/queues/:name/${action}`, operatorsOnly, async (c) => {
      const name = knownQueue(c.req.param('name') ?? '');
      const queue = deps.queues.get(name);
      await (action === 'pause' ? queue.pause() : queue.resume());
      await audit(c, `queue.${action}`, 'queue', name, undefined);
      return c.redirect(`${BASE}/queues`, 303);
    });
  }
  app.post('/queues/:name/retry-failed', operatorsOnly, async (c) => {
    const name = knownQueue(c.req.param('name') ?? '');
    assertRedisUp(deps);
    const retried = await retryFailed(deps, name);
    await audit(c, 'queue.retry_failed', 'queue', name, { retried });
    return c.redirect(`${BASE}/queues`, 303);
  });

  return app;
}
