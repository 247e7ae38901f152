// Live job streams over a real socket: a web process, workers in the test process, Redis pub/sub between them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, createTestEnv, startProcess, tenantWithKeys, waitFor, type Proc, type TestEnv } from './helpers.js';
import { compareEventIds } from '../src/events.js';
import { makeImage } from './fixtures/images.js';
import { openStream, type RawEvent } from './support/sse.js';

let env: TestEnv;
let web: Proc;
let api: ReturnType<typeof client>;
let key: string;
let otherKey: string;

beforeAll(async () => {
  env = await createTestEnv('sse', { env: { SSE_KEEPALIVE_MS: '300' } });
  const t = await tenantWithKeys(env);
  const other = await tenantWithKeys(env);
  key = t.clientKey;
  otherKey = other.clientKey;
  [web] = await Promise.all([startProcess('web', env.env), env.startWorkers(['test', 'image'])]);
  api = client(web.url!, key);
});

afterAll(async () => {
  await web?.stop();
  await env?.close();
});

async function whilePaused<T>(queue: string, fn: () => Promise<T>): Promise<T> {
  await env.queues.get(queue).pause();
  try {
    return await fn();
  } finally {
    await env.queues.get(queue).resume();
  }
}

const summary = (events: RawEvent[]) =>
  events.map((e) => (e.event === 'progress' ? `progress:${e.data.progress}` : `${e.data.state}`));

describe('GET /v1/jobs/:id/events', () => {
  it('streams queued → running → progress → succeeded in order, then closes', async () => {
    // The queue is paused until the stream is open, so the stream sees the job queued.
    const { r, s } = await whilePaused('test', async () => {
      const job = await api('POST', '/v1/jobs', { type: 'test', payload: { progress_steps: 4, sleep_ms: 400 } });
      return { r: job, s: await openStream(web.url!, key, job.body.id) };
    });
    await s.ended;
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toContain('text/event-stream');
    expect(summary(s.events)).toEqual([
      'queued',
      'running',
      'progress:25',
      'progress:50',
      'progress:75',
      'progress:100',
      'succeeded',
    ]);
    expect(s.events[0].event).toBe('state');
    expect(s.events.at(-1)).toMatchObject({
      event: 'state',
      data: { id: r.body.id, state: 'succeeded', progress: 100, result: { attempt: 1 } },
    });
    // Ids increase, so a reconnect can say where it stopped.
    const ids = s.events.slice(1).map((e) => e.id!);
    expect([...ids].sort(compareEventIds)).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('streams an image job: queued → running → progress → succeeded with its variants', async () => {
    const up = await fetch(`${web.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'image/png' },
      body: await makeImage('png', 1600, 1200),
    });
    expect(up.status).toBe(201);
    const file = (await up.json()) as { id: string };
    const { r, s } = await whilePaused('image', async () => {
      const job = await api('POST', '/v1/jobs', { type: 'image', payload: { file_id: file.id } });
      return { r: job, s: await openStream(web.url!, key, job.body.id) };
    });
    expect(r.status).toBe(202);
    await s.ended;
    const states = summary(s.events);
    expect(states[0]).toBe('queued');
    expect(states[1]).toBe('running');
    expect(states.at(-1)).toBe('succeeded');
    const progress = s.events.filter((e) => e.event === 'progress').map((e) => e.data.progress);
    expect(progress.length).toBeGreaterThan(0);
    expect([...progress].sort((a, b) => a - b)).toEqual(progress);
    expect(s.events.at(-1)!.data.result.variants.map((v: { name: string }) => v.name)).toEqual([
      'thumb',
      'medium',
      'large',
    ]);
  });

  it('starts from a queued job’s current state and follows it to the end', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { progress_steps: 2, sleep_ms: 200 } });
    const s = await openStream(web.url!, key, r.body.id);
    await s.ended;
    const states = summary(s.events);
    expect(states[0]).toMatch(/^(queued|running|progress:50|succeeded)$/);
    expect(states.at(-1)).toBe('succeeded');
  });

  it('sends the final state at once and closes for a job that has already ended', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: {} });
    await waitFor(async () => (await api('GET', `/v1/jobs/${r.body.id}`)).body.state === 'succeeded');
    const s = await openStream(web.url!, key, r.body.id);
    await s.ended;
    expect(summary(s.events)).toEqual(['succeeded']);
  });

  it('replays what a client missed when it reconnects with Last-Event-ID', async () => {
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { progress_steps: 10, sleep_ms: 1500 },
      run_at: new Date(Date.now() + 2000).toISOString(),
    });
    const first = await openStream(web.url!, key, r.body.id);
    const seen = await first.next(3); // delayed, running, progress:10
    first.close();
    // Let more happen while nobody listens.
    await waitFor(async () => (await api('GET', `/v1/jobs/${r.body.id}`)).body.progress >= 50);
    const second = await openStream(web.url!, key, r.body.id, seen.at(-1)!.id);
    await second.ended;
    const all = summary([...seen, ...second.events]);
    expect(all).toEqual([
      'delayed',
      'running',
      ...Array.from({ length: 10 }, (_, i) => `progress:${(i + 1) * 10}`),
      'succeeded',
    ]);
    // An EventSource reconnecting after the end is told to stop (204).
    const third = await openStream(web.url!, key, r.body.id, second.events.at(-1)!.id);
    expect(third.status).toBe(204);
  });

  it('sends keep-alive comments on a quiet stream and cleans up when the client goes away', async () => {
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 60_000).toISOString(),
    });
    const s = await openStream(web.url!, key, r.body.id);
    await s.next(1);
    await waitFor(() => s.comments.includes('keep-alive'), { timeout: 3_000, what: 'a keep-alive comment' });
    s.close();
    const c = await api('POST', `/v1/jobs/${r.body.id}/cancel`);
    expect(c.body.state).toBe('cancelled');
  });

  it('is tenant-scoped: another tenant’s job and unknown ids are 404', async () => {
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 60_000).toISOString(),
    });
    const other = await client(web.url!, otherKey)('GET', `/v1/jobs/${r.body.id}/events`);
    expect(other.status).toBe(404);
    expect(other.headers.get('content-type')).toContain('application/problem+json');
    expect((await api('GET', '/v1/jobs/019a8f1e-7c3a-7b2e-9d41-2f6a0c8e5b13/events')).status).toBe(404);
    expect((await api('GET', '/v1/jobs/nope/events')).status).toBe(404);
    expect((await client(web.url!)('GET', `/v1/jobs/${r.body.id}/events`)).status).toBe(401);
    await api('POST', `/v1/jobs/${r.body.id}/cancel`);
  });

  it('ends a stream with the cancelled state when the job is cancelled', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { sleep_ms: 20_000, progress_steps: 20 } });
    const s = await openStream(web.url!, key, r.body.id);
    await waitFor(() => s.events.some((e) => e.data.state === 'running'), { what: 'running' });
    await api('POST', `/v1/jobs/${r.body.id}/cancel`);
    await s.ended;
    expect(s.events.at(-1)!.data.state).toBe('cancelled');
  });
});
