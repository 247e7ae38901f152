// Prometheus metrics: the API's /metrics (operator auth) and a worker process's own port; counters move as jobs run.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createApp } from '../src/api/app.js';
import {
  client,
  createTestEnv,
  ROOT,
  startProcess,
  tenantWithKeys,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;
let op: ReturnType<typeof client>;
let cl: ReturnType<typeof client>;
let worker: Proc | undefined;

beforeAll(async () => {
  env = await createTestEnv('metrics');
  keys = await tenantWithKeys(env);
  op = client(env.app, keys.operatorKey);
  cl = client(env.app, keys.clientKey);
});

afterAll(async () => {
  await worker?.stop();
  await env?.close();
});

type Samples = Map<string, number>;

/** Parses the Prometheus text format into `name{sorted labels}` → value. */
function parse(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)]
      .map(([, k, v]) => `${k}=${v}`)
      .sort();
    out.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return out;
}

/** A sample's value (0 when absent), labels given in any order. */
function value(s: Samples, name: string, labels: Record<string, string> = {}): number {
  const key = `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .sort()
    .join(',')}}`;
  return s.get(key) ?? 0;
}

async function scrape(): Promise<Samples> {
  const r = await op('GET', '/metrics');
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toContain('text/plain');
  return parse(r.body as string);
}

const waitState = (id: string, state: string) =>
  waitFor(async () => (await cl('GET', `/v1/jobs/${id}`)).body.state === state, { what: `${id} ${state}` });

describe('GET /metrics on the API', () => {
  test('is for operators (Bearer or Basic)', async () => {
    const none = await client(env.app)('GET', '/metrics');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic /);
    expect((await cl('GET', '/metrics')).status).toBe(403);
    const basic = await client(env.app)('GET', '/metrics', undefined, {
      authorization: `Basic ${Buffer.from(`x:${keys.operatorKey}`).toString('base64')}`,
    });
    expect(basic.status).toBe(200);
  });

  test('job counters, histograms, queue depth and request metrics move as jobs run', async () => {
    const before = await scrape();
    // Process metrics of this process are there from the start.
    expect(value(before, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(before.has('nodejs_heap_size_used_bytes{}')).toBe(true);

    const running = await env.startWorkers(['test']);
    const ok = await Promise.all(
      [1, 2, 3].map(() => cl('POST', '/v1/jobs', { type: 'test', payload: {}, priority: 'high' })),
    );
    const permanent = await cl('POST', '/v1/jobs', { type: 'test', payload: { permanent: true } });
    const flaky = await cl('POST', '/v1/jobs', { type: 'test', payload: { fail_times: 1 } });
    for (const r of ok) await waitState(r.body.id, 'succeeded');
    await waitState(permanent.body.id, 'failed');
    await waitState(flaky.body.id, 'succeeded');
    await cl('GET', `/v1/jobs/${flaky.body.id}`);
    await cl('GET', `/v1/jobs/${flaky.body.id}`);

    // The ledger's terminal state comes a moment before BullMQ's completed/failed events the counters listen for.
    const settled = (s: Samples) =>
      value(s, 'jobs_completed_total', { type: 'test' }) - value(before, 'jobs_completed_total', { type: 'test' }) >=
        4 &&
      value(s, 'jobs_failed_total', { type: 'test' }) - value(before, 'jobs_failed_total', { type: 'test' }) >= 1;
    await waitFor(async () => settled(await scrape()), { what: 'the counters to catch up' });
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) =>
      value(after, name, labels) - value(before, name, labels);
    expect(delta('jobs_completed_total', { type: 'test' })).toBe(4);
    expect(delta('jobs_failed_total', { type: 'test' })).toBe(1);
    expect(delta('job_retries_total', { type: 'test' })).toBe(1);
    // Six runs (the flaky job ran twice); queue wait is the first run of each of the five jobs.
    expect(delta('job_run_duration_seconds_count', { type: 'test', priority: 'high' })).toBe(3);
    expect(delta('job_run_duration_seconds_count', { type: 'test', priority: 'normal' })).toBe(3);
    expect(delta('job_queue_wait_seconds_count', { type: 'test', priority: 'high' })).toBe(3);
    expect(delta('job_queue_wait_seconds_count', { type: 'test', priority: 'normal' })).toBe(2);
    expect(
      value(after, 'job_run_duration_seconds_bucket', { type: 'test', priority: 'high', le: '+Inf' }),
    ).toBeGreaterThanOrEqual(3);
    expect(value(after, 'queue_jobs', { queue: 'test', state: 'failed' })).toBe(1);
    expect(value(after, 'queue_jobs', { queue: 'test', state: 'completed' })).toBeGreaterThanOrEqual(4);
    expect(after.has('queue_jobs{queue=email,state=waiting}')).toBe(true);
    // Requests are counted by route pattern, never by raw path.
    expect(
      delta('http_requests_total', { method: 'GET', route: '/v1/jobs/:id', status: '200' }),
    ).toBeGreaterThanOrEqual(2);
    expect(delta('http_requests_total', { method: 'POST', route: '/v1/jobs', status: '202' })).toBe(5);
    expect([...after.keys()].some((k) => k.includes(flaky.body.id))).toBe(false);
    expect(
      value(after, 'http_request_duration_seconds_count', { method: 'POST', route: '/v1/jobs', status: '202' }),
    ).toBeGreaterThanOrEqual(5);
    await running.close(1_000);
  });

  test('a 401 is counted under the route it was meant for', async () => {
    const before = await scrape();
    await client(env.app)('GET', '/v1/queues');
    const after = await scrape();
    expect(
      value(after, 'http_requests_total', { method: 'GET', route: '/v1/queues', status: '401' }) -
        value(before, 'http_requests_total', { method: 'GET', route: '/v1/queues', status: '401' }),
    ).toBe(1);
  });
});

describe('a worker process', () => {
  test('serves its own metrics on WORKER_METRICS_PORT (0 = any free port), and its counters move', async () => {
    // Per-job lines ("job started", "job succeeded") are debug-level: a busy worker would write one per job.
    worker = await startProcess('worker', env.env, { QUEUES: 'serial', LOG_LEVEL: 'debug' });
    const port = await waitFor(() => /worker metrics on :(\d+)/.exec(worker!.output())?.[1], {
      what: 'the metrics port in the log',
    });
    const url = `http://127.0.0.1:${port}/metrics`;
    const first = parse(await (await fetch(url)).text());
    expect(value(first, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(value(first, 'jobs_completed_total', { type: 'serial' })).toBe(0);

    const job = await cl('POST', '/v1/jobs', { type: 'serial', payload: { sleep_ms: 50 }, priority: 'low' });
    await waitState(job.body.id, 'succeeded');
    // The ledger says succeeded a moment before BullMQ records the completion the counter listens for.
    const second = await waitFor(
      async () => {
        const s = parse(await (await fetch(url)).text());
        return value(s, 'jobs_completed_total', { type: 'serial' }) >= 1 && s;
      },
      { what: 'the completion to be counted' },
    );
    expect(value(second, 'jobs_completed_total', { type: 'serial' })).toBe(1);
    expect(value(second, 'job_run_duration_seconds_count', { type: 'serial', priority: 'low' })).toBe(1);
    expect(value(second, 'job_run_duration_seconds_sum', { type: 'serial', priority: 'low' })).toBeGreaterThanOrEqual(
      0.04,
    );
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    // Its job log lines carry the job's id, type and tenant.
    const line = worker
      .output()
      .split('\n')
      .find((l) => / job succeeded in \d+ ms"/.test(l));
    expect(JSON.parse(line!)).toMatchObject({ job_id: job.body.id, type: 'serial', tenant: keys.tenant });
  });
});

test('the operator routes are in the OpenAPI document', async () => {
  const doc = (await client(env.app)('GET', '/openapi.json')).body as { paths: Record<string, unknown> };
  for (const p of [
    '/v1/queues',
    '/v1/queues/{name}/pause',
    '/v1/queues/{name}/resume',
    '/v1/queues/{name}/retry-failed',
    '/v1/audit',
    '/v1/schedules',
    '/v1/schedules/{name}',
  ]) {
    expect(Object.keys(doc.paths)).toContain(p);
  }
});

test('the Grafana dashboard queries only metrics that exist', async () => {
  const text = (await op('GET', '/metrics')).body as string;
  const exposed = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    exposed.add(name);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exposed.add(name + suffix);
  }
  const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'grafana/dashboard.json'), 'utf8')) as {
    panels: { targets?: { expr: string }[] }[];
  };
  const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
  expect(exprs.length).toBeGreaterThan(10);
  const used = new Set(
    exprs.flatMap((e) => [...e.matchAll(/(?<![$\w])([a-z][a-z0-9]*_[a-z0-9_]+)(?=\s*[{[)]|$)/g)].map((m) => m[1])),
  );
  expect(used.size).toBeGreaterThan(8);
  for (const name of used) expect(exposed, name).toContain(name);
});

test('API log lines carry the request id the response names', async () => {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const app = createApp({
    config: env.config,
    db: env.db,
    redis: env.redis,
    queues: env.queues,
    registry: env.registry,
    storage: env.storage,
    log,
  });
  const r = await client(app, keys.operatorKey)('GET', '/v1/queues');
  expect(r.status).toBe(200);
  const id = r.headers.get('x-request-id');
  expect(id).toBeTruthy();
  expect(lines.find((l) => l.req_id === id)).toMatchObject({ status: 200, path: '/v1/queues' });
});
