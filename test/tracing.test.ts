// Tracing across the hop: real web and worker processes export OTLP/HTTP (JSON) to a receiver this test runs, and
// the spans of one job, from the request to each run of it and its webhook, form one trace.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  client,
  createTestEnv,
  jobInState,
  startProcess,
  tenantWithKeys,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';
import sharp from 'sharp';
import { startReceiver, type Receiver } from './support/receiver.js';
import { startSmtp, type TestSmtp } from './support/smtp.js';

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: { key: string; value: OtlpValue }[];
  links?: { traceId: string; spanId: string }[];
}
/** A decoded span, with the service that sent it. */
interface Span {
  service: string;
  traceId: string;
  spanId: string;
  parent: string | undefined;
  name: string;
  attrs: Record<string, string | number | boolean | undefined>;
  links: { traceId: string; spanId: string }[];
}

/** An OTLP/HTTP receiver: POST /v1/traces with the JSON encoding, decoded as the exporter sent it. */
async function startCollector() {
  const spans: Span[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') return res.writeHead(404).end();
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      const doc = JSON.parse(body.toString('utf8')) as {
        resourceSpans: {
          resource: { attributes: { key: string; value: OtlpValue }[] };
          scopeSpans: { spans: OtlpSpan[] }[];
        }[];
      };
      for (const rs of doc.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '?';
        for (const ss of rs.scopeSpans)
          for (const s of ss.spans)
            spans.push({
              service,
              traceId: s.traceId,
              spanId: s.spanId,
              parent: s.parentSpanId || undefined,
              name: s.name,
              attrs: Object.fromEntries(
                (s.attributes ?? []).map((a) => [
                  a.key,
                  a.value.stringValue ??
                    (a.value.intValue !== undefined ? Number(a.value.intValue) : a.value.boolValue),
                ]),
              ),
              links: s.links ?? [],
            });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** The span tree of one trace as indented lines: `service: name`, children in start order. */
function tree(spans: Span[], traceId: string): string {
  const mine = spans.filter((s) => s.traceId === traceId);
  const ids = new Set(mine.map((s) => s.spanId));
  const lines: string[] = [];
  const walk = (parent: string | undefined, depth: number) => {
    for (const s of mine.filter((x) => (parent ? x.parent === parent : !x.parent || !ids.has(x.parent)))) {
      const job = s.attrs['job.id']
        ? ` [job.type=${s.attrs['job.type']} job.attempt=${s.attrs['job.attempt'] ?? '-'}]`
        : '';
      lines.push(`${'  '.repeat(depth)}${s.service}: ${s.name}${job}`);
      walk(s.spanId, depth + 1);
    }
  };
  walk(undefined, 0);
  return lines.join('\n');
}

describe('tracing across web and worker processes', () => {
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let hooks: Receiver;
  let smtp: TestSmtp;
  let env: TestEnv;
  let web: Proc;
  let worker: Proc;
  let api: ReturnType<typeof client>;
  let key: string;

  beforeAll(async () => {
    collector = await startCollector();
    hooks = await startReceiver();
    smtp = await startSmtp();
    env = await createTestEnv('tracing', {
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        // Export within a fifth of a second, so the test need not wait for the default five.
        OTEL_BSP_SCHEDULE_DELAY: '200',
        WEBHOOK_ALLOW_PRIVATE: 'true',
        SMTP_URL: smtp.url,
        TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '0',
      },
    });
    // One after the other, with patience: cold starts on a loaded machine are slow.
    web = await startProcess('web', env.env, {}, { startTimeoutMs: 90_000 });
    worker = await startProcess('worker', env.env, {}, { startTimeoutMs: 90_000 });
    ({ clientKey: key } = await tenantWithKeys(env));
    api = client(web.url!, key);
  }, 240_000);

  afterAll(async () => {
    await Promise.all([web?.stop(), worker?.stop()]);
    await env?.close();
    await hooks?.close();
    await smtp?.close();
    await collector?.close();
  });

  it('one trace from POST /v1/jobs through the insert and the enqueue to each run and the webhook', async () => {
    hooks.on('/done', 200);
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { fail_times: 1, progress_steps: 2 },
      callback_url: `${hooks.url}/done`,
    });
    expect(r.status).toBe(202);
    const id: string = r.body.id;
    await jobInState(api, id, ['succeeded'], 30_000);
    await waitFor(() => hooks.received.some((h) => h.path === '/done'), { what: 'the webhook' });

    // Both runs, the webhook's delivery and its HTTP request have been exported.
    const runs = () => collector.spans.filter((s) => s.name === 'process test' && s.attrs['job.id'] === id);
    await waitFor(
      () =>
        runs().length === 2 &&
        collector.spans.some((s) => s.name === 'process webhooks') &&
        collector.spans.some((s) => s.service === 'movie-jobs-worker' && s.name === 'POST'),
      { what: 'the runs and the webhook spans', timeout: 15_000 },
    );

    const submit = collector.spans.find((s) => s.name === 'job submit' && s.attrs['job.id'] === id);
    expect(submit?.service).toBe('movie-jobs-web');
    expect(submit?.attrs['job.type']).toBe('test');
    const traceId = submit!.traceId;
    console.log(`span tree of job ${id}:\n${tree(collector.spans, traceId)}`);
    const inTrace = collector.spans.filter((s) => s.traceId === traceId);
    const byId = new Map(inTrace.map((s) => [s.spanId, s]));
    const parentOf = (s: Span) => (s.parent ? byId.get(s.parent) : undefined);
    const childrenOf = (s: Span) => inTrace.filter((c) => c.parent === s.spanId);

    // The request's server span is the root; the job's submit span is its child.
    const request = parentOf(submit!);
    expect(request).toMatchObject({ service: 'movie-jobs-web', name: 'POST', parent: undefined });
    expect(request!.attrs['http.route'] ?? request!.attrs['url.path'] ?? request!.attrs['http.target']).toMatch(
      /\/v1\/jobs$/,
    );

    // The ledger insert (a group-commit batch, linked to the job's span) and its INSERT statement.
    const insert = childrenOf(submit!).find((s) => s.name === 'jobs insert');
    expect(insert?.links.map((l) => l.spanId)).toContain(submit!.spanId);
    // One statement inserts and admits (src/db/admission.ts): pg names its span by the first word, WITH.
    expect(
      childrenOf(insert!).some((s) => s.attrs['db.system.name'] === 'postgresql' && /insert|with/i.test(s.name)),
    ).toBe(true);

    // The enqueue: BullMQ's producer span under the job's span, its Redis commands under it.
    const add = childrenOf(submit!).find((s) => s.name === 'add test.test');
    expect(add?.service).toBe('movie-jobs-web');
    expect(childrenOf(add!).some((s) => s.attrs['db.system.name'] === 'redis')).toBe(true);

    // Both runs (the failed first attempt and its retry) are BullMQ consumer spans in the worker process, children
    // of the enqueue, about this job: its id, type and attempt.
    const [first, second] = runs().sort((a, b) => Number(a.attrs['job.attempt']) - Number(b.attrs['job.attempt']));
    for (const run of [first, second]) {
      expect(run).toMatchObject({ service: 'movie-jobs-worker', traceId, parent: add!.spanId });
      expect(run.attrs['job.type']).toBe('test');
      // The run's own ledger writes (progress) are PostgreSQL spans under it.
      expect(childrenOf(run).some((s) => s.attrs['db.system.name'] === 'postgresql')).toBe(true);
    }
    expect([first.attrs['job.attempt'], second.attrs['job.attempt']]).toEqual([1, 2]);

    // The webhook: enqueued by the successful run, delivered by the webhooks worker, its HTTP POST under that.
    const hookAdd = childrenOf(second).find((s) => s.name.startsWith('add webhooks'));
    expect(hookAdd).toBeDefined();
    const delivery = childrenOf(hookAdd!).find((s) => s.name === 'process webhooks');
    expect(delivery).toBeDefined();
    expect(
      childrenOf(delivery!).some(
        (s) => s.name === 'POST' && s.attrs['server.port'] === Number(new URL(hooks.url).port),
      ),
    ).toBe(true);
    // Nothing of this job escaped into another trace.
    expect(collector.spans.filter((s) => s.attrs['job.id'] === id && s.traceId !== traceId)).toEqual([]);
  }, 60_000);

  it('a run the reconciler enqueues again (Redis lost the job) joins the trace of the request', async () => {
    // Due in a few seconds (slack for a loaded machine), so the test takes it out of Redis before it runs, as a lost
    // write or a wiped Redis would.
    const runAt = new Date(Date.now() + 8_000).toISOString();
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: {}, run_at: runAt });
    expect(r.status).toBe(202);
    const id: string = r.body.id;
    expect(await env.queues.get('test').remove(id)).toBe(1);
    await jobInState(api, id, ['succeeded'], 30_000);

    const run = await waitFor(
      () => collector.spans.find((s) => s.name === 'process test' && s.attrs['job.id'] === id),
      { what: 'the run span', timeout: 15_000 },
    );
    const submit = collector.spans.find((s) => s.name === 'job submit' && s.attrs['job.id'] === id);
    expect(run.traceId).toBe(submit?.traceId);
    // Its parent is the reconciler's enqueue, made in the worker process, itself a child of the job's submit span.
    const add = collector.spans.find((s) => s.spanId === run.parent);
    expect(add).toMatchObject({ service: 'movie-jobs-worker', name: 'add test.test', parent: submit!.spanId });
  }, 60_000);

  it("an email's SMTP transaction and an image's sharp renders are spans of their runs", async () => {
    const mail = await api('POST', '/v1/jobs', {
      type: 'email',
      payload: { to: 'reader@example.com', template: 'plain', subject: 'traced', text: 'hello' },
    });
    expect(mail.status).toBe(202);
    const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#336699' } })
      .png()
      .toBuffer();
    const file = await fetch(`${web.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}` },
      body: new Uint8Array(png),
    });
    expect(file.status).toBe(201);
    const image = await api('POST', '/v1/jobs', {
      type: 'image',
      payload: {
        file_id: ((await file.json()) as { id: string }).id,
        variants: [
          { name: 'a', width: 32 },
          { name: 'b', width: 16 },
        ],
      },
    });
    expect(image.status).toBe(202);
    await jobInState(api, mail.body.id, ['succeeded'], 30_000);
    await jobInState(api, image.body.id, ['succeeded'], 30_000);

    const runOf = (id: string) =>
      collector.spans.find((s) => s.name.startsWith('process ') && s.attrs['job.id'] === id);
    const under = (run: Span, name: string) =>
      collector.spans.filter((s) => s.traceId === run.traceId && s.parent === run.spanId && s.name === name);
    const [mailRun, imageRun] = await waitFor(
      () => {
        const m = runOf(mail.body.id);
        const i = runOf(image.body.id);
        return m && i && under(m, 'smtp send').length === 1 && under(i, 'sharp render').length === 2 && [m, i];
      },
      { what: 'the email and image runs with their spans', timeout: 15_000 },
    );
    expect(mailRun).toMatchObject({ name: 'process email', service: 'movie-jobs-worker' });
    expect(mailRun.attrs['job.type']).toBe('email');
    expect(under(mailRun, 'smtp send')[0].attrs['server.address']).toBe('127.0.0.1');
    expect(smtp.received.map((r) => r.to)).toContainEqual(['reader@example.com']);
    expect(imageRun).toMatchObject({ name: 'process image', service: 'movie-jobs-worker' });
    expect(
      under(imageRun, 'sharp render')
        .map((s) => s.attrs['image.variant'])
        .sort(),
    ).toEqual(['a', 'b']);
    // Each job's run is in the trace of its own request.
    for (const [id, run] of [
      [mail.body.id, mailRun],
      [image.body.id, imageRun],
    ] as const) {
      const submit = collector.spans.find((s) => s.name === 'job submit' && s.attrs['job.id'] === id);
      expect(run.traceId).toBe(submit?.traceId);
    }
  }, 60_000);
});
