// Property-based fuzzing of every route in the OpenAPI document: generated bodies, headers, ids and query strings.
// Whatever comes in, the answer is never a 5xx, every error is application/problem+json with its status, and the
// process keeps serving. Routes come from the document, so routes other helpers add are fuzzed too.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, startProcess, tenantWithKeys, type Proc, type TestEnv } from './helpers.js';

interface Param {
  name: string;
  in: 'path' | 'query' | 'header';
}
interface Op {
  method: string;
  path: string;
  params: Param[];
  bodyTypes: string[];
}

/** Requests per run, shared by however many operations the document lists, so the file's time stays bounded. */
const IN_PROCESS_BUDGET = 1000;
const HTTP_BUDGET = 250;

let env: TestEnv;
let web: Proc;
let ops: Op[] = [];
let keys: { client: string; operator: string; jobId: string };
let doc: {
  paths: Record<string, Record<string, { parameters?: Param[]; requestBody?: { content?: Record<string, unknown> } }>>;
  components?: { schemas?: Record<string, unknown> };
};

/** Valid bodies to start mutations from, so fuzzing reaches past the first validation error. */
const SEEDS: Record<string, unknown[]> = {
  'POST /v1/jobs': [
    { type: 'test', payload: { value: 1 } },
    { type: 'email', payload: { to: 'a@example.com', template: 'plain', subject: 'hi', text: 'x' } },
    { type: 'image', payload: { file_id: 'file_abcdefghijkl', variants: [{ name: 'thumb', width: 64 }] } },
    { type: 'report', payload: { kind: 'jobs', format: 'csv' } },
    { type: 'recommendations', payload: { user_id: 'u1', limit: 5 } },
  ],
  'POST /v1/jobs/bulk': [
    {
      jobs: [
        { type: 'test', payload: {} },
        { type: 'serial', payload: { sleep_ms: 1 } },
      ],
    },
  ],
  'POST /v1/movies': [{ movies: [{ id: 'm1', title: 'Alien', genres: ['Horror'], year: 1979 }] }],
  'POST /v1/ratings': [{ ratings: [{ user_id: 'u1', movie_id: 'm1', rating: 4.5 }] }],
  'PUT /v1/schedules/{name}': [{ type: 'test', payload: {}, every_ms: 60_000 }],
};

const printable = fc.string({
  unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  maxLength: 80,
});

const idArb = () =>
  fc.oneof(
    fc.uuid(),
    fc.constant(keys.jobId),
    fc.constant(keys.jobId.toUpperCase()),
    fc.string({ maxLength: 60 }),
    fc.constantFrom(
      '',
      '0',
      '-1',
      'null',
      'undefined',
      '..',
      '../..',
      '%00',
      "' or 1=1--",
      'a'.repeat(400),
      '\u0000',
      '1e309',
      `file_${'x'.repeat(80)}`,
    ),
    fc.string({ unit: 'binary', maxLength: 20 }),
  );

/** A JSON value, a mutation of a valid body, or bytes that are not JSON at all. */
function bodyArb(seedKey: string) {
  const seeds = SEEDS[seedKey] ?? [{}];
  const mutated = fc
    .tuple(
      fc.constantFrom(...seeds),
      fc.array(fc.tuple(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 3 })), { maxLength: 3 }),
      fc.boolean(),
    )
    .map(([seed, extra, deep]) => {
      const copy = structuredClone(seed) as Record<string, unknown>;
      for (const [k, v] of extra) {
        const target =
          deep && copy.payload && typeof copy.payload === 'object' ? (copy.payload as Record<string, unknown>) : copy;
        target[k === '' ? 'x' : k] = v;
      }
      return JSON.stringify(copy);
    });
  const replaced = fc.tuple(fc.constantFrom(...seeds), fc.jsonValue({ maxDepth: 4 })).map(([seed, v]) => {
    const copy = structuredClone(seed) as Record<string, unknown>;
    const k = Object.keys(copy)[0];
    if (k) copy[k] = v;
    return JSON.stringify(copy);
  });
  return fc.oneof(
    { weight: 3, arbitrary: mutated },
    { weight: 2, arbitrary: replaced },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 5 }).map((v) => JSON.stringify(v)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        '{',
        '{"type":',
        '[]',
        'null',
        '{"__proto__":{"polluted":1}}',
        '{"constructor":{"prototype":{}}}',
        '\u0000',
        '['.repeat(5000),
      ),
    },
    {
      weight: 1,
      arbitrary: fc
        .nat({ max: 3 })
        .map((d) => JSON.stringify({ jobs: Array.from({ length: 1001 + d }, () => ({ type: 'test', payload: {} })) })),
    },
  );
}

const request = (op: Op) =>
  fc.record({
    auth: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(`Bearer ${keys.client}`, `Bearer ${keys.operator}`) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          '',
          'Bearer',
          'Bearer ',
          'Basic',
          'Basic !!!',
          `Basic ${Buffer.from(`x:${keys.client}`).toString('base64')}`,
          'Bearer mj_forged',
          `Bearer ${'x'.repeat(300)}`,
        ),
      },
      { weight: 1, arbitrary: printable },
    ),
    ids: fc.array(idArb(), { minLength: 4, maxLength: 4 }),
    query: fc.array(
      fc.tuple(
        fc.oneof(
          fc.constantFrom(
            ...op.params.filter((p) => p.in === 'query').map((p) => p.name),
            'limit',
            'cursor',
            'state',
            'type',
          ),
          fc.string({ maxLength: 8 }),
        ),
        fc.oneof(
          printable,
          fc.integer().map(String),
          fc.constantFrom('0', '-1', '201', '1e3', 'NaN', 'queued', 'bad=cursor', '%', ''),
        ),
      ),
      { maxLength: 3 },
    ),
    headers: fc.array(
      fc.tuple(
        fc.constantFrom(
          'idempotency-key',
          'content-type',
          'last-event-id',
          'accept',
          'x-request-id',
          'content-encoding',
        ),
        printable,
      ),
      { maxLength: 2 },
    ),
    body:
      op.bodyTypes.length || op.method !== 'GET'
        ? fc.option(bodyArb(`${op.method} ${op.path}`), { nil: undefined, freq: 8 })
        : fc.constant(undefined),
  });

type Req = {
  auth: string;
  ids: string[];
  query: [string, string][];
  headers: [string, string][];
  body: string | undefined;
};

function build(op: Op, r: Req): { url: string; init: RequestInit } {
  let i = 0;
  const path = op.path.replace(/\{[^}]+\}/g, () => encodeURIComponent(r.ids[i++ % r.ids.length]));
  const qs = new URLSearchParams(r.query).toString();
  const headers: Record<string, string> = {};
  if (r.auth) headers.authorization = r.auth;
  if (r.body !== undefined) headers['content-type'] = op.bodyTypes[0] ?? 'application/json';
  for (const [k, v] of r.headers) headers[k] = v;
  return {
    url: `${path}${qs ? `?${qs}` : ''}`,
    init: { method: op.method, headers, body: op.method === 'GET' || op.method === 'HEAD' ? undefined : r.body },
  };
}

/** The properties every answer must have; a failure message, or undefined. */
async function check(op: Op, res: Response): Promise<string | undefined> {
  const type = res.headers.get('content-type') ?? '';
  if (type.includes('text/event-stream')) {
    await res.body?.cancel();
    return res.status >= 500 ? `${res.status} stream` : undefined;
  }
  const text = await res.text();
  if (res.status >= 500) return `${op.method} ${op.path}: ${res.status} ${text.slice(0, 300)}`;
  if (res.status >= 400) {
    if (!type.includes('application/problem+json'))
      return `${op.method} ${op.path}: ${res.status} with content-type ${type}`;
    let body: { status?: number; type?: string; title?: string };
    try {
      body = JSON.parse(text);
    } catch {
      return `${op.method} ${op.path}: ${res.status} problem that is not JSON`;
    }
    if (body.status !== res.status || !body.type || !body.title)
      return `${op.method} ${op.path}: malformed problem ${text.slice(0, 200)}`;
    if (/\bat [^ ]+\.(ts|js):\d+/.test(text)) return `${op.method} ${op.path}: stack trace in the answer`;
  }
  return undefined;
}

beforeAll(async () => {
  // Limits high enough that fuzzing exercises the routes rather than only the 429 path.
  env = await createTestEnv('fuzz', { env: { RATE_LIMIT_PER_MINUTE: '10000000', TENANT_MAX_IN_FLIGHT: '0' } });
  const t = await tenantWithKeys(env);
  const job = await env.app.request('/v1/jobs', {
    method: 'POST',
    headers: { authorization: `Bearer ${t.clientKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'test', payload: {} }),
  });
  keys = { client: t.clientKey, operator: t.operatorKey, jobId: ((await job.json()) as { id: string }).id };
  doc = (await (await env.app.request('/openapi.json')).json()) as typeof doc;
  ops = Object.entries(doc.paths).flatMap(([path, byMethod]) =>
    Object.entries(byMethod).map(([m, o]) => ({
      method: m.toUpperCase(),
      path,
      params: o.parameters ?? [],
      bodyTypes: Object.keys(o.requestBody?.content ?? {}),
    })),
  );
});

afterAll(async () => {
  await web?.stop();
  await env?.close();
});

describe('fuzzing every route', () => {
  it('has routes to fuzz', () => {
    expect(ops.length).toBeGreaterThanOrEqual(5);
    console.info(`fuzz: ${ops.length} operations: ${ops.map((o) => `${o.method} ${o.path}`).join(', ')}`);
  });

  it('never answers 5xx, and every error is problem+json (in process)', async () => {
    const failures: string[] = [];
    for (const op of ops) {
      await fc.assert(
        fc.asyncProperty(request(op), async (r) => {
          const { url, init } = build(op, r);
          const failure = await check(op, await env.app.request(url, init));
          if (failure) failures.push(failure);
          if (failure) throw new Error(`${failure}\n  request: ${init.method} ${url}`);
        }),
        { numRuns: Math.max(30, Math.floor(IN_PROCESS_BUDGET / ops.length)), endOnFailure: true },
      );
    }
    expect(failures).toEqual([]);
  });

  it('keeps a real web process up and correct under the same inputs over HTTP', async () => {
    web = await startProcess('web', env.env);
    const failures: string[] = [];
    for (const op of ops) {
      await fc.assert(
        fc.asyncProperty(request(op), async (r) => {
          const { url, init } = build(op, r);
          let res: Response;
          try {
            res = await fetch(web.url + url, { ...init, signal: AbortSignal.timeout(10_000) });
          } catch (err) {
            // The client itself may refuse an input (a header value fetch will not send); the server is not at fault.
            if (err instanceof TypeError && !/fetch failed/.test(err.message)) return true;
            failures.push(`${op.method} ${url}: ${String(err)} ${(err as { cause?: unknown }).cause ?? ''}`);
            return false;
          }
          const failure = await check(op, res);
          if (failure) failures.push(failure);
          if (failure) throw new Error(`${failure}\n  request: ${init.method} ${url}`);
        }),
        { numRuns: Math.max(10, Math.floor(HTTP_BUDGET / ops.length)), endOnFailure: true },
      );
    }
    expect(failures).toEqual([]);
    expect(web.child.exitCode).toBeNull();
    expect((await fetch(`${web.url}/healthz`)).status).toBe(200);
    expect(web.output()).not.toMatch(/"level":(50|60).*unhandled/);
  });
});

describe('strict schemas', () => {
  it('documents every JSON request object as closed (additionalProperties: false)', () => {
    const open: string[] = [];
    const visit = (schema: unknown, where: string): void => {
      if (!schema || typeof schema !== 'object') return;
      const s = schema as Record<string, unknown>;
      if (typeof s.$ref === 'string') {
        const name = s.$ref.split('/').pop()!;
        visit(doc.components?.schemas?.[name], `${where}→${name}`);
        return;
      }
      if (s.properties && s.additionalProperties !== false) open.push(where);
      for (const [k, v] of Object.entries((s.properties as Record<string, unknown>) ?? {})) visit(v, `${where}.${k}`);
      for (const key of ['items', 'anyOf', 'oneOf', 'allOf'] as const) {
        const v = s[key];
        if (Array.isArray(v)) v.forEach((x, i) => visit(x, `${where}.${key}[${i}]`));
        else if (v) visit(v, `${where}.${key}`);
      }
    };
    for (const [path, byMethod] of Object.entries(doc.paths)) {
      for (const [m, o] of Object.entries(byMethod)) {
        // JSON bodies; a multipart upload's extra form fields are simply not read.
        const json = o.requestBody?.content?.['application/json'] as { schema?: unknown } | undefined;
        if (json) visit(json.schema, `${m.toUpperCase()} ${path}`);
      }
    }
    expect(open).toEqual([]);
  });

  it('refuses internal fields on a job submission, one by one and in bulk, and records nothing', async () => {
    const before = await countJobs();
    for (const field of [
      'attempts',
      'max_attempts',
      'tenant',
      'state',
      'id',
      'result',
      'error',
      'progress',
      'created_at',
      'cancel_requested',
      'parent_id',
      'idempotency_key',
    ]) {
      for (const [path, body] of [
        ['/v1/jobs', { type: 'test', payload: {}, [field]: field === 'tenant' ? 'someone-else' : 1 }],
        ['/v1/jobs/bulk', { jobs: [{ type: 'test', payload: {}, [field]: 1 }] }],
        ['/v1/jobs/bulk', { jobs: [{ type: 'test', payload: {} }], [field]: 1 }],
      ] as const) {
        const res = await env.app.request(path, {
          method: 'POST',
          headers: { authorization: `Bearer ${keys.client}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        expect(res.status, `${path} with ${field}`).toBe(400);
        expect(JSON.stringify(await res.json())).toContain(field);
      }
    }
    // Inside a payload too: a type's schema is strict.
    const res = await env.app.request('/v1/jobs', {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.client}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'test', payload: { attempts: 9 } }),
    });
    expect(res.status).toBe(400);
    expect(await countJobs()).toBe(before);
  });

  it('refuses an unknown field on every route that takes a JSON object body', async () => {
    const failures: string[] = [];
    for (const op of ops.filter((o) => o.bodyTypes.includes('application/json'))) {
      for (const seed of SEEDS[`${op.method} ${op.path}`] ?? [{}]) {
        const { url, init } = build(op, {
          auth: `Bearer ${keys.operator}`,
          ids: [keys.jobId],
          query: [],
          headers: [],
          body: JSON.stringify({ ...(seed as object), not_a_field: true }),
        });
        const res = await env.app.request(url, init);
        const text = await res.text();
        if (res.status !== 400 && res.status !== 404)
          failures.push(`${op.method} ${op.path}: ${res.status} ${text.slice(0, 200)}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('answers 400 for values PostgreSQL cannot store (NUL characters)', async () => {
    for (const body of [
      { type: 'test', payload: { value: 'a\u0000b' } },
      { type: 'test', payload: { value: { 'k\u0000': 1 } } },
    ]) {
      const res = await env.app.request('/v1/jobs', {
        method: 'POST',
        headers: { authorization: `Bearer ${keys.client}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(400);
      expect(res.headers.get('content-type')).toContain('application/problem+json');
    }
  });

  it('answers 404 for malformed ids without reaching the database', async () => {
    for (const id of ['not-a-uuid', "1' or '1'='1", '00000000-0000-0000-0000-00000000000g', 'x'.repeat(1000)]) {
      const res = await env.app.request(`/v1/jobs/${encodeURIComponent(id)}`, {
        headers: { authorization: `Bearer ${keys.client}` },
      });
      expect(res.status).toBe(404);
    }
  });
});

async function countJobs(): Promise<number> {
  const r = await env.db
    .selectFrom('jobs')
    .select((e) => e.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(r.n);
}
