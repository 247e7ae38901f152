// Many open streams: one Redis subscriber per API process, bounded memory per stream, cleanup on disconnect.
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../src/queues/keys.js';
import {
  client,
  createTestEnv,
  sleep,
  startProcess,
  tenantWithKeys,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';
import { openStream, type RawStream } from './support/sse.js';

let env: TestEnv;
let web: Proc;
let server: ServerType;
let local: string;
let key: string;

beforeAll(async () => {
  // One key holds all the streams here: the per-key cap (SSE_MAX_STREAMS_PER_KEY) is raised out of the way, since
  // this file measures what many streams cost a process, not the cap (test/review-limits.test.ts tests that).
  env = await createTestEnv('sse_load', { env: { SSE_MAX_STREAMS_PER_KEY: '5000' } });
  key = (await tenantWithKeys(env)).clientKey;
  [web] = await Promise.all([startProcess('web', env.env), env.startWorkers(['test'])]);
  // The in-process app on a real socket, so the test can look at its hub.
  server = serve({ fetch: env.app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((r) => server.once('listening', r));
  local = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await web?.stop();
  (server as import('node:http').Server | undefined)?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await env?.close();
});

const later = () => new Date(Date.now() + 600_000).toISOString();

async function delayedJobs(base: string, n: number): Promise<string[]> {
  const r = await client(base, key)('POST', '/v1/jobs/bulk', {
    jobs: Array.from({ length: n }, () => ({ type: 'test', payload: {}, run_at: later() })),
  });
  expect(r.status).toBe(202);
  return r.body.jobs.map((j: { id: string }) => j.id);
}

async function openAll(base: string, ids: string[], batch = 100): Promise<RawStream[]> {
  const out: RawStream[] = [];
  for (let i = 0; i < ids.length; i += batch) {
    const streams = await Promise.all(ids.slice(i, i + batch).map((id) => openStream(base, key, id)));
    await Promise.all(streams.map((s) => s.next(1)));
    out.push(...streams);
  }
  return out;
}

function rssBytes(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
  return Number(kb) * 1024;
}

/** Connections subscribed to this env's job-event channel (one per API process: the web child and this process). */
async function subscribers(): Promise<number> {
  const [, n] = (await env.redis.call('PUBSUB', 'NUMSUB', keys(env.config).events)) as [string, number];
  return n;
}

describe('many live streams', () => {
  it('unsubscribes when clients go away or the job ends, and shares one Redis subscription', async () => {
    const ids = await delayedJobs(local, 20);
    expect(await subscribers()).toBe(2);
    const streams = await openAll(local, [...ids, ...ids]);
    expect(env.hub.size).toBe(40);
    expect(await subscribers()).toBe(2);
    for (const s of streams.slice(0, 30)) s.close();
    await waitFor(() => env.hub.size === 10, { what: 'the hub to drop closed streams' });
    // The last ten streams follow ids[10..19]; cancelling ends them.
    const api = client(local, key);
    await Promise.all(ids.slice(10).map((id) => api('POST', `/v1/jobs/${id}/cancel`)));
    await Promise.all(streams.slice(30).map((s) => s.ended));
    expect(streams.slice(30).every((s) => s.events.at(-1)!.data.state === 'cancelled')).toBe(true);
    await waitFor(() => env.hub.size === 0, { what: 'the hub to drop ended streams' });
  });

  it('catches up on events published while its Redis subscriber was reconnecting', async () => {
    const api = client(local, key);
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { progress_steps: 50, sleep_ms: 3000 } });
    const s = await openStream(local, key, r.body.id);
    await waitFor(() => s.events.some((e) => e.data.progress >= 20), { what: 'some progress' });
    // Drop the hub's own connection while progress comes every 60 ms (found by its local port); ioredis reconnects and resubscribes.
    const port = (env.hub as unknown as { subscriber: { stream: { localPort: number } } }).subscriber.stream.localPort;
    const line = ((await env.redis.call('CLIENT', 'LIST')) as string)
      .split('\n')
      .find((l) => l.includes(`addr=127.0.0.1:${port} `))!;
    expect(line).toBeTruthy();
    await env.redis.call('CLIENT', 'KILL', 'ID', /\bid=(\d+)/.exec(line)![1]);
    await s.ended;
    const progress = s.events.filter((e) => e.event === 'progress').map((e) => e.data.progress);
    expect(progress.filter((p) => p > progress[0])).toEqual(
      Array.from({ length: 50 }, (_, i) => (i + 1) * 2).filter((p) => p > progress[0]),
    );
    expect(s.events.at(-1)!.data.state).toBe('succeeded');
  });

  it('holds 1,000 open streams on one API process within bounded memory', async () => {
    const ids = await delayedJobs(web.url!, 1000);
    // Warm up code paths and pools so the baseline is not the first request's allocations.
    const warm = await openAll(web.url!, ids.slice(0, 50));
    warm.forEach((s) => s.close());
    await sleep(500);
    const base = rssBytes(web.child.pid!);
    const streams = await openAll(web.url!, ids);
    await sleep(500);
    const open = rssBytes(web.child.pid!);
    const perStream = (open - base) / streams.length;
    console.log(
      `SSE: 1000 open streams, web RSS ${(base / 2 ** 20).toFixed(1)} MiB → ${(open / 2 ** 20).toFixed(1)} MiB, ${Math.round(perStream)} bytes per stream`,
    );
    expect(streams.every((s) => s.events.length === 1 && s.events[0].data.state === 'delayed')).toBe(true);
    // Generous bound: a stream must not cost anywhere near a connection or a buffer per job.
    expect(perStream).toBeLessThan(200 * 1024);
    streams.forEach((s) => s.close());
  });
});
