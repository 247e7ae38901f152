// Webhooks end to end: a job with callback_url ends, a real receiver gets a signed POST, retries until it recovers.
// WEBHOOK_ALLOW_PRIVATE=true here, since the receiver listens on 127.0.0.1 (webhook-ssrf.test.ts tests the refusal).
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { v7 as uuidv7 } from 'uuid';
import { sweepOnce } from '../src/webhooks/sweep.js';
import { client, createTestEnv, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';
import { startReceiver, type Receiver } from './support/receiver.js';

let env: TestEnv;
let rx: Receiver;
let api: ReturnType<typeof client>;
let other: ReturnType<typeof client>;
let secret: string;
let tenant: string;

beforeAll(async () => {
  env = await createTestEnv('webhook', {
    env: {
      WEBHOOK_ALLOW_PRIVATE: 'true',
      WEBHOOK_BACKOFF_MS: '200',
      WEBHOOK_TIMEOUT_MS: '1000',
      WEBHOOK_ATTEMPTS: '5',
    },
  });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
  other = client(env.app, (await tenantWithKeys(env)).clientKey);
  rx = await startReceiver();
  await env.startWorkers(['test']);
  secret = (await api('GET', '/v1/webhook-secret')).body.webhook_secret;
});

afterAll(async () => {
  await rx?.close();
  await env?.close();
});

const deliveries = (id: string) => api('GET', `/v1/jobs/${id}/webhooks`).then((r) => r.body.items as any[]);

function verify(r: { body: string; headers: Record<string, string> }) {
  return new Webhook(secret).verify(r.body, r.headers) as { type: string; timestamp: string; data: any };
}

describe('webhooks', () => {
  it('shows the tenant its signing secret', async () => {
    const r = await api('GET', '/v1/webhook-secret');
    expect(r.status).toBe(200);
    expect(r.body.webhook_secret).toMatch(/^whsec_/);
    expect((await other('GET', '/v1/webhook-secret')).body.webhook_secret).not.toBe(r.body.webhook_secret);
    expect((await client(env.app)('GET', '/v1/webhook-secret')).status).toBe(401);
  });

  it('POSTs the terminal state, signed per Standard Webhooks, and records the try on the job', async () => {
    const job = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 42 }, callback_url: `${rx.url}/ok` });
    await waitFor(() => rx.received.some((r) => r.path === '/ok'), { what: 'the webhook' });
    const got = rx.received.find((r) => r.path === '/ok')!;
    expect(got.headers['content-type']).toBe('application/json');
    const msg = verify(got);
    expect(msg).toMatchObject({
      type: 'job.succeeded',
      data: { id: job.body.id, state: 'succeeded', result: { echo: 42 } },
    });
    expect(got.headers['webhook-id']).toMatch(/^msg_/);
    // A tampered body fails verification: the check above is meaningful.
    expect(() => verify({ ...got, body: got.body.replace('42', '43') })).toThrow();
    const tries = await waitFor(async () =>
      (await deliveries(job.body.id)).length ? deliveries(job.body.id) : undefined,
    );
    expect(tries).toMatchObject([
      {
        attempt: 1,
        outcome: 'delivered',
        status_code: 200,
        event: 'job.succeeded',
        url: `${rx.url}/ok`,
        message_id: got.headers['webhook-id'],
      },
    ]);
    expect((await other('GET', `/v1/jobs/${job.body.id}/webhooks`)).status).toBe(404);
  });

  it('retries a receiver that fails twice, and delivers once it recovers', async () => {
    rx.on('/flaky', 500, 503, 200);
    const job = await api('POST', '/v1/jobs', { type: 'test', payload: {}, callback_url: `${rx.url}/flaky` });
    await waitFor(() => rx.received.some((r) => r.path === '/flaky' && r.status === 200), { what: 'the third try' });
    const tries = rx.received.filter((r) => r.path === '/flaky');
    expect(tries.map((r) => r.status)).toEqual([500, 503, 200]);
    // One message: the same id on every try, each signature valid for its own timestamp.
    expect(new Set(tries.map((r) => r.headers['webhook-id'])).size).toBe(1);
    for (const t of tries) expect(verify(t).data.id).toBe(job.body.id);
    const rows = await waitFor(async () =>
      (await deliveries(job.body.id)).length === 3 ? deliveries(job.body.id) : undefined,
    );
    expect(rows.map((r) => [r.attempt, r.outcome, r.status_code])).toEqual([
      [1, 'failed', 500],
      [2, 'failed', 503],
      [3, 'delivered', 200],
    ]);
  });

  it('treats a receiver that does not answer in time as a failure, and retries', async () => {
    rx.on('/slow', 0, 204);
    const job = await api('POST', '/v1/jobs', { type: 'test', payload: {}, callback_url: `${rx.url}/slow` });
    const rows = await waitFor(
      async () => ((await deliveries(job.body.id)).length === 2 ? deliveries(job.body.id) : undefined),
      { what: 'two tries' },
    );
    expect(rows[0]).toMatchObject({ outcome: 'failed', status_code: null });
    expect(rows[0].error).toMatch(/timed out/);
    expect(rows[1]).toMatchObject({ outcome: 'delivered', status_code: 204 });
  });

  it('reports failures too, and follows a redirect with the same signed POST', async () => {
    rx.on('/moved', `redirect:${rx.url}/moved-here`);
    const job = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { permanent: true },
      callback_url: `${rx.url}/moved`,
    });
    await waitFor(() => rx.received.some((r) => r.path === '/moved-here'), { what: 'the redirected webhook' });
    const msg = verify(rx.received.find((r) => r.path === '/moved-here')!);
    expect(msg).toMatchObject({
      type: 'job.failed',
      data: { id: job.body.id, state: 'failed', error: { code: 'test_permanent' } },
    });
  });

  it('gives up after the configured tries, each recorded', async () => {
    rx.on('/down', 500);
    const job = await api('POST', '/v1/jobs', { type: 'test', payload: {}, callback_url: `${rx.url}/down` });
    const rows = await waitFor(
      async () => ((await deliveries(job.body.id)).length >= 5 ? deliveries(job.body.id) : undefined),
      { timeout: 30_000, what: 'five tries' },
    );
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await deliveries(job.body.id)).length).toBe(5);
    expect(rows.every((r) => r.outcome === 'failed')).toBe(true);
  });

  it('reports a queued job cancelled through the API', async () => {
    const job = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 60_000).toISOString(),
      callback_url: `${rx.url}/cancelled`,
    });
    expect((await api('POST', `/v1/jobs/${job.body.id}/cancel`)).status).toBe(200);
    await waitFor(() => rx.received.some((r) => r.path === '/cancelled'), { what: 'the webhook' });
    expect(verify(rx.received.find((r) => r.path === '/cancelled')!)).toMatchObject({
      type: 'job.cancelled',
      data: { id: job.body.id, state: 'cancelled' },
    });
  });

  it('delivers, by the sweep, a job that ended without its webhook being enqueued (a worker died in between)', async () => {
    const id = uuidv7();
    const finished = new Date(Date.now() - 60_000);
    await env.db
      .insertInto('jobs')
      .values({
        id,
        tenant,
        type: 'test',
        state: 'succeeded',
        priority: 'normal',
        payload: '{}',
        max_attempts: 3,
        result: '{"ok":true}',
        callback_url: `${rx.url}/swept`,
        created_at: finished,
        started_at: finished,
        finished_at: finished,
      })
      .execute();
    expect(await sweepOnce(env)).toContain(id);
    await waitFor(() => rx.received.some((r) => r.path === '/swept'), { what: 'the swept webhook' });
    expect(verify(rx.received.find((r) => r.path === '/swept')!)).toMatchObject({
      type: 'job.succeeded',
      data: { id, result: { ok: true } },
    });
    await waitFor(async () => (await deliveries(id)).length === 1);
    expect(await sweepOnce(env)).not.toContain(id);
  });

  it('sends nothing for a job without callback_url', async () => {
    const job = await api('POST', '/v1/jobs', { type: 'test', payload: {} });
    await waitFor(async () => (await api('GET', `/v1/jobs/${job.body.id}`)).body.state === 'succeeded');
    expect(await deliveries(job.body.id)).toEqual([]);
  });
});
