// The typed client against the real API on a socket, with in-process workers.
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/api/app.js';
import { EventHub } from '../src/api/event-hub.js';
import { ApiError, createClient, type JobEvent, type JobsClient } from '../src/client/index.js';
import { createTestEnv, silentLog, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
const servers: ServerType[] = [];
let jobs: JobsClient;
let key: string;

async function listen(app: { fetch: (req: Request) => Response | Promise<Response> }): Promise<string> {
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  servers.push(server);
  await new Promise((r) => server.once('listening', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  env = await createTestEnv('client');
  key = (await tenantWithKeys(env)).clientKey;
  await env.startWorkers(['test']);
  jobs = createClient({ baseUrl: await listen(env.app), apiKey: key, pollIntervalMs: 100 });
});

afterAll(async () => {
  for (const s of servers) (s as import('node:http').Server).closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await env?.close();
});

// The test job type is not in the client's product types; tests reach it through a cast.
const testJob = (payload: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  ({ type: 'test', payload, ...extra }) as never;

describe('typed client', () => {
  it('submits, follows live over SSE, and resolves with the final job', async () => {
    const job = await jobs.submit(
      testJob({ progress_steps: 4, sleep_ms: 400, value: 'hi' }, { run_at: new Date(Date.now() + 1500).toISOString() }),
    );
    expect(job.state).toBe('delayed');
    const seen: JobEvent[] = [];
    const done = await jobs.wait(job.id, { transport: 'sse', onEvent: (e) => seen.push(e) });
    expect(done).toMatchObject({ id: job.id, state: 'succeeded', result: { echo: 'hi' } });
    expect(seen.map((e) => (e.event === 'progress' ? e.job.progress : e.job.state))).toEqual([
      'delayed',
      'running',
      25,
      50,
      75,
      100,
      'succeeded',
    ]);
    expect(seen.every((e) => e.id)).toBe(true);
    expect((await jobs.get(job.id)).state).toBe('succeeded');
  });

  it('cancels a running job, and reports API errors as ApiError with the problem', async () => {
    const job = await jobs.submit(testJob({ sleep_ms: 20_000, progress_steps: 20 }));
    const waiting = jobs.wait(job.id, { onEvent: (e) => void (e.job.state === 'running' && jobs.cancel(job.id)) });
    expect((await waiting).state).toBe('cancelled');
    const again = await jobs.cancel(job.id).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(ApiError);
    expect(again).toMatchObject({ status: 409, problem: { state: 'cancelled' } });
    await expect(jobs.get('019a8f1e-7c3a-7b2e-9d41-2f6a0c8e5b13')).rejects.toMatchObject({ status: 404 });
    await expect(jobs.submit({ type: 'report', payload: { kind: 'nope' } } as never)).rejects.toMatchObject({
      status: 400,
    });
  });

  it('falls back to polling when the API cannot stream', async () => {
    // A real app without the event hub answers /events with 503.
    const polling = createClient({
      baseUrl: await listen(createApp({ ...env, hub: undefined, log: silentLog })),
      apiKey: key,
      pollIntervalMs: 100,
    });
    const job = await polling.submit(testJob({ progress_steps: 2, sleep_ms: 600 }));
    const seen: JobEvent[] = [];
    const done = await polling.wait(job.id, { maxReconnects: 0, onEvent: (e) => seen.push(e) });
    expect(done.state).toBe('succeeded');
    expect(seen.at(-1)!.job.state).toBe('succeeded');
    expect(seen.some((e) => e.event === 'progress' || e.job.state === 'running')).toBe(true);
    await expect(polling.wait(job.id, { transport: 'sse', maxReconnects: 0 })).rejects.toMatchObject({ status: 503 });
  });

  it('survives a stream that ends mid-way (the API process shutting down)', async () => {
    const hub = EventHub.create(env.config);
    const client = createClient({
      baseUrl: await listen(createApp({ ...env, hub, log: silentLog })),
      apiKey: key,
      pollIntervalMs: 100,
    });
    const job = await client.submit(testJob({ progress_steps: 5, sleep_ms: 1500 }));
    const seen: JobEvent[] = [];
    const done = await client.wait(job.id, {
      maxReconnects: 1,
      onEvent: (e) => {
        seen.push(e);
        if (e.job.progress === 20) void hub.close();
      },
    });
    expect(done.state).toBe('succeeded');
    expect(seen.some((e) => e.job.progress === 20)).toBe(true);
  });

  it('types payloads per job type', () => {
    // Compile-time only (npm run typecheck): a wrong payload is an error, a right one is not.
    const typed = () => {
      void jobs.submit({
        type: 'image',
        payload: { file_id: 'file_x', variants: [{ name: 'thumb', width: 128, format: 'webp' }] },
      });
      void jobs.submit({ type: 'recommendations', payload: { user_id: 'u1', limit: 5 } });
      // @ts-expect-error: `width` must be a number
      void jobs.submit({ type: 'image', payload: { file_id: 'file_x', variants: [{ name: 'thumb', width: '128' }] } });
      // @ts-expect-error: reports have no `pages`
      void jobs.submit({ type: 'report', payload: { kind: 'jobs', pages: 3 } });
    };
    expect(typeof typed).toBe('function');
  });
});
