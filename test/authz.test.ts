// Authorisation matrix: every route the app serves × {no key, revoked key, client of tenant A, client of tenant B,
// operator, viewer}. Routes come from the app itself (its OpenAPI document and its Hono route table), so a route added
// tomorrow is probed too: it gets its entry in RULES below, or falls under the default rule, and is listed as such.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey, revokeKey } from '../src/auth/keys.js';
import { saveFile } from '../src/files/index.js';
import { createTestEnv, tenantWithKeys, type TestEnv } from './helpers.js';

type Who = 'none' | 'revoked' | 'clientA' | 'clientB' | 'operator' | 'viewer';
// The viewer (of tenant B) goes before the others: a write it were wrongly allowed would show as a changed state.
const WHO: Who[] = ['none', 'revoked', 'viewer', 'clientB', 'clientA', 'operator'];

/** How a route is guarded. `owned`: its path names a resource of tenant A, so tenant B must get 404. */
interface Rule {
  /** `session`: the console, which takes its login cookie and no key (GET → 303 to the login form, else 401). */
  access: 'open' | 'tenant' | 'operator' | 'session';
  owned?: boolean;
  body?: (f: Fixtures) => unknown;
  /** Raw body and content type, for upload routes. */
  raw?: { body: string; type: string };
}

interface Fixtures {
  jobId: string;
  fileId: string;
}

/** Routes known when this was written. Anything else falls to defaultRule(). Keys: `METHOD /openapi/{style}`. */
const RULES: Record<string, Rule> = {
  'GET /': { access: 'open' },
  'GET /healthz': { access: 'open' },
  'GET /readyz': { access: 'open' },
  'GET /openapi.json': { access: 'open' },
  'GET /docs': { access: 'open' },
  'POST /v1/jobs': { access: 'tenant', body: () => ({ type: 'test', payload: {} }) },
  'POST /v1/jobs/bulk': { access: 'tenant', body: () => ({ jobs: [{ type: 'test', payload: {} }] }) },
  'GET /v1/jobs': { access: 'tenant' },
  'GET /v1/jobs/{id}': { access: 'tenant', owned: true },
  'GET /v1/jobs/{id}/events': { access: 'tenant', owned: true },
  'GET /v1/jobs/{id}/timeline': { access: 'tenant', owned: true },
  'GET /v1/jobs/{id}/logs': { access: 'tenant', owned: true },
  'POST /v1/jobs/{id}/cancel': { access: 'tenant', owned: true },
  'POST /v1/jobs/{id}/retry': { access: 'tenant', owned: true },
  'GET /v1/jobs/{id}/webhooks': { access: 'tenant', owned: true },
  'POST /v1/files': { access: 'tenant', raw: { body: 'hello', type: 'text/plain' } },
  'GET /v1/files/{id}': { access: 'tenant', owned: true },
  'GET /v1/webhook-secret': { access: 'tenant' },
  'GET /v1/movies': { access: 'tenant' },
  'POST /v1/movies': { access: 'tenant', body: () => ({ movies: [{ id: 'm1', title: 'Alien', genres: ['Horror'] }] }) },
  'POST /v1/ratings': { access: 'tenant', body: () => ({ ratings: [{ user_id: 'u1', movie_id: 'm1', rating: 4 }] }) },
  'GET /v1/users/{user_id}/recommendations': { access: 'tenant' },
  'POST /v1/users/{user_id}/recommendations': { access: 'tenant', body: () => ({}) },
  'GET /v1/queues': { access: 'operator' },
  'POST /v1/queues/{name}/pause': { access: 'operator' },
  'POST /v1/queues/{name}/resume': { access: 'operator' },
  'POST /v1/queues/{name}/retry-failed': { access: 'operator' },
  'GET /v1/schedules': { access: 'operator' },
  'GET /v1/schedules/{name}': { access: 'operator' },
  'PUT /v1/schedules/{name}': { access: 'operator', body: () => ({ type: 'test', payload: {}, every_ms: 3_600_000 }) },
  'DELETE /v1/schedules/{name}': { access: 'operator' },
  'GET /v1/audit': { access: 'operator' },
  'GET /metrics': { access: 'operator' },
  'GET /admin/queues': { access: 'operator' },
  'GET /console/login': { access: 'open' },
  'GET /console/assets/console.css': { access: 'open' },
  'GET /console/assets/console.js': { access: 'open' },
};

const OPEN_PREFIXES = ['/v1/', '/metrics', '/admin'];

/** A route nobody described: guarded if it lives under a guarded prefix; operator-only if its document says 403. */
function defaultRule(path: string, op: OpenApiOp | undefined): Rule {
  if (path.startsWith('/console')) return { access: 'session' };
  if (!OPEN_PREFIXES.some((p) => path.startsWith(p))) return { access: 'open' };
  return { access: op?.responses?.['403'] ? 'operator' : 'tenant', body: () => exampleBody(op) };
}

interface OpenApiOp {
  responses?: Record<string, unknown>;
  requestBody?: { content?: Record<string, { schema?: { example?: unknown } }> };
}

function exampleBody(op: OpenApiOp | undefined): unknown {
  if (!op?.requestBody) return undefined;
  return op.requestBody.content?.['application/json']?.schema?.example ?? {};
}

let env: TestEnv;
let keys: Record<Exclude<Who, 'none'>, string>;
let fx: Fixtures;
const routes: { method: string; path: string; op?: OpenApiOp; rule: Rule; defaulted: boolean }[] = [];

const PARAM_VALUES: Record<string, (f: Fixtures, path: string) => string> = {
  id: (f, path) => (path.startsWith('/v1/files') ? f.fileId : f.jobId),
  user_id: () => 'u1',
  name: (_f, path) => (path.startsWith('/v1/queues') ? 'test' : 'authz-probe'),
};

function concrete(path: string): string {
  return path.replace(/\{([^}]+)\}/g, (_m, name: string) =>
    encodeURIComponent(PARAM_VALUES[name]?.(fx, path) ?? 'probe'),
  );
}

async function call(method: string, path: string, rule: Rule, key: string | undefined) {
  const headers: Record<string, string> = key ? { authorization: `Bearer ${key}` } : {};
  let body: string | undefined;
  if (rule.raw) {
    body = rule.raw.body;
    headers['content-type'] = rule.raw.type;
  } else if (rule.body && method !== 'GET' && method !== 'DELETE') {
    const b = rule.body(fx);
    if (b !== undefined) {
      body = JSON.stringify(b);
      headers['content-type'] = 'application/json';
    }
  }
  const res = await env.app.request(concrete(path), { method, headers, body });
  // Live streams never end on their own: the status and headers are what this test is about.
  if (res.headers.get('content-type')?.includes('text/event-stream')) await res.body?.cancel();
  else await res.arrayBuffer();
  return res;
}

beforeAll(async () => {
  env = await createTestEnv('authz');
  const a = await tenantWithKeys(env);
  const b = await tenantWithKeys(env);
  const revoked = await createKey(env.db, env.config.API_KEY_SECRET, a.tenant, 'client');
  await revokeKey(env.db, revoked.id);
  const viewer = await createKey(env.db, env.config.API_KEY_SECRET, b.tenant, 'viewer');
  keys = {
    revoked: revoked.key,
    clientA: a.clientKey,
    clientB: b.clientKey,
    operator: b.operatorKey,
    viewer: viewer.key,
  };

  const job = await env.app.request('/v1/jobs', {
    method: 'POST',
    headers: { authorization: `Bearer ${a.clientKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'test', payload: {} }),
  });
  expect(job.status).toBe(202);
  // A terminal job, so its event stream and retry behave as for any finished job.
  const jobId = ((await job.json()) as { id: string }).id;
  await env.db.updateTable('jobs').set({ state: 'failed', finished_at: new Date() }).where('id', '=', jobId).execute();
  const file = await saveFile(env.db, env.storage, {
    tenant: a.tenant,
    body: Buffer.from('tenant A only'),
    contentType: 'text/plain',
  });
  fx = { jobId, fileId: file.id };

  const doc = (await (await env.app.request('/openapi.json')).json()) as {
    paths: Record<string, Record<string, OpenApiOp>>;
  };
  const seen = new Set<string>();
  const add = (method: string, path: string, op?: OpenApiOp) => {
    const id = `${method} ${path}`;
    if (seen.has(id)) return;
    seen.add(id);
    const rule = RULES[id];
    routes.push({ method, path, op, rule: rule ?? defaultRule(path, op), defaulted: !rule });
  };
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [m, op] of Object.entries(ops)) add(m.toUpperCase(), path, op);
  // Routes outside the document (dashboards, metrics, docs): from Hono's own table, concrete paths only.
  for (const r of env.app.routes) {
    if (r.method === 'ALL' || r.path.includes('*')) continue;
    const path = r.path.replace(/:([A-Za-z_]+)(\{[^}]*\})?/g, '{$1}');
    // Bull Board serves its UI and API below /admin/queues; the entry page stands for all of them.
    if (path.startsWith('/admin/') && path !== '/admin/queues') continue;
    add(r.method, path);
  }
  const defaulted = routes.filter((r) => r.defaulted).map((r) => `${r.method} ${r.path} → ${r.rule.access}`);
  if (defaulted.length)
    console.info(`authz: routes under the default rule (give them an entry in RULES):\n  ${defaulted.join('\n  ')}`);
});

afterAll(() => env?.close());

describe('authorisation matrix', () => {
  it('finds the routes the app serves', () => {
    console.info(
      `authz: ${routes.length} routes × ${WHO.length} principals: ${routes.map((r) => `${r.method} ${r.path}`).join(', ')}`,
    );
    const ids = routes.map((r) => `${r.method} ${r.path}`);
    expect(ids).toEqual(expect.arrayContaining(['POST /v1/jobs', 'GET /v1/jobs/{id}', 'GET /healthz']));
  });

  it('answers each route × principal as the rules say', async () => {
    const failures: string[] = [];
    for (const route of routes) {
      for (const who of WHO) {
        const res = await call(route.method, route.path, route.rule, who === 'none' ? undefined : keys[who]);
        const s = res.status;
        const expectation = expected(route.rule, who, s, route.method, route.path);
        if (s >= 500) failures.push(`${route.method} ${route.path} as ${who}: ${s} (a 5xx)`);
        else if (expectation !== true)
          failures.push(`${route.method} ${route.path} as ${who}: got ${s}, expected ${expectation}`);
        if (s >= 400 && !res.headers.get('content-type')?.includes('application/problem+json')) {
          failures.push(`${route.method} ${route.path} as ${who}: ${s} without application/problem+json`);
        }
        if (s === 401 && !res.headers.get('www-authenticate'))
          failures.push(`${route.method} ${route.path} as ${who}: 401 without WWW-Authenticate`);
      }
    }
    expect(failures).toEqual([]);
  });
});

/** true when `status` is right for `who` on a route with `rule`, else a description of what was expected. */
function expected(rule: Rule, who: Who, status: number, method: string, path: string): true | string {
  if (rule.access === 'open') return status < 400 ? true : 'a 2xx/3xx (open route)';
  if (rule.access === 'session') {
    const want = method === 'GET' ? 303 : 401;
    return status === want ? true : `${want} (the console takes its session cookie, not a key)`;
  }
  if (who === 'none' || who === 'revoked') return status === 401 ? true : '401';
  if (who === 'viewer') {
    // Reads what operators read, across tenants (Bull Board in its read-only mode); changes nothing.
    if (method !== 'GET') return status === 403 ? true : '403 (a viewer changes nothing)';
    if (rule.owned)
      return status !== 401 && status !== 403 && status !== 404 ? true : 'allowed (a viewer reads every tenant)';
    return status !== 401 && status !== 403 ? true : 'allowed (not 401/403)';
  }
  if (rule.access === 'operator' && who !== 'operator') return status === 403 ? true : '403 (operators only)';
  if (rule.owned && who === 'clientB') return status === 404 ? true : "404 (another tenant's resource)";
  if (rule.owned) return status !== 401 && status !== 403 && status !== 404 ? true : 'allowed (not 401/403/404)';
  return status !== 401 && status !== 403 ? true : 'allowed (not 401/403)';
}
