// The job lifecycle on a real 3-master Redis Cluster: API and worker processes, queues on different masters.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { bullPrefix } from '../src/queues/keys.js';
import { createRedis, isCluster } from '../src/queues/redis.js';
import {
  client,
  createTestEnv,
  jobInState,
  type Proc,
  startProcess,
  tenantWithKeys,
  type TestEnv,
  uniqueName,
} from './helpers.js';
import { startRedisCluster, type RedisClusterHandle } from './support/redis-cluster.js';

let cluster: RedisClusterHandle;
let env: TestEnv;
let web: Proc;
let worker: Proc;
let api: ReturnType<typeof client>;
let key: string;
const markers = mkdtempSync(path.join(os.tmpdir(), 'cluster-'));

beforeAll(async () => {
  cluster = await startRedisCluster(3);
  // A prefix whose two test queues hash to different masters, so every cross-queue path (reconciler, cancel) is
  // exercised across nodes.
  let prefix = '';
  for (let i = 0; i < 50 && !prefix; i++) {
    const p = `t_${uniqueName('cluster')}`;
    const c = loadConfig({ REDIS_URL: cluster.url, QUEUE_PREFIX: p });
    const [a, b] = await Promise.all(['test', 'serial'].map((q) => cluster.nodeFor(`${bullPrefix(c, q)}:${q}:id`)));
    if (a !== b) prefix = p;
  }
  env = await createTestEnv('cluster', {
    env: { REDIS_URL: cluster.url, REDIS_CLUSTER: 'true', QUEUE_PREFIX: prefix },
  });
  const t = await tenantWithKeys(env);
  const start = { startTimeoutMs: 90_000 };
  [web, worker] = await Promise.all([
    startProcess('web', env.env, {}, start),
    startProcess('worker', env.env, {}, start),
  ]);
  key = t.clientKey;
  api = client(web.url!, key);
}, 240_000);

afterAll(async () => {
  await Promise.all([web?.stop(), worker?.stop()]);
  await env?.close();
  await cluster?.stop();
});

const until = (id: string, states: string[], timeout?: number) => jobInState(api, id, states, timeout);

describe('Redis Cluster', () => {
  it('treats a REDIS_URL listing several nodes as a cluster and spreads the queues over the masters', async () => {
    expect(isCluster(loadConfig({ REDIS_URL: 'redis://a:7000,redis://b:7001' }))).toBe(true);
    expect(isCluster(loadConfig({ REDIS_URL: 'redis://a:7000' }))).toBe(false);
    // Credentials and TLS of the first URL apply to every node.
    const c = createRedis(loadConfig({ REDIS_URL: 'rediss://app:s%40cret@127.0.0.1:1,127.0.0.1:2' }), 'producer');
    c.on('error', () => {});
    c.disconnect();
    expect(c).toBeInstanceOf(Cluster);
    expect((c as Cluster).options.redisOptions).toMatchObject({ username: 'app', password: 's@cret', tls: {} });
    const prod = loadConfig({ REDIS_URL: cluster.url, QUEUE_PREFIX: 'jobs' });
    expect(bullPrefix(prod, 'email')).toBe('{jobs:email}');
    expect(bullPrefix(loadConfig({ QUEUE_PREFIX: 'jobs' }), 'email')).toBe('jobs');
    // The platform's own queues with the default prefix: not all on one master.
    const nodes = await Promise.all(
      ['recommendations', 'email', 'image', 'report'].map((q) => cluster.nodeFor(`${bullPrefix(prod, q)}:${q}:wait`)),
    );
    expect(new Set(nodes).size).toBeGreaterThan(1);
    expect(web.output() + worker.output()).not.toMatch(/CROSSSLOT|MOVED|non local key/i);
  });

  it('runs a job to succeeded with progress and its result', async () => {
    const r = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: { value: 'on a cluster', progress_steps: 2, sleep_ms: 100 },
    });
    expect(r.status).toBe(202);
    const done = await until(r.body.id, ['succeeded']);
    expect(done).toMatchObject({
      progress: 100,
      attempts: 1,
      result: { echo: 'on a cluster', attempt: 1 },
      error: null,
    });
  });

  it('retries with backoff, fails after max attempts, and fails a permanent error at once', async () => {
    const ok = await api('POST', '/v1/jobs', { type: 'test', payload: { fail_times: 2 } });
    const bad = await api('POST', '/v1/jobs', { type: 'test', payload: { fail_times: 5 } });
    const perm = await api('POST', '/v1/jobs', { type: 'test', payload: { permanent: true } });
    expect((await until(ok.body.id, ['succeeded'])).attempts).toBe(3);
    expect(await until(bad.body.id, ['failed'])).toMatchObject({ attempts: 3, error: { code: 'processor_error' } });
    expect(await until(perm.body.id, ['failed'])).toMatchObject({ attempts: 1, error: { code: 'test_permanent' } });
  });

  it('runs high-priority jobs before low ones', async () => {
    const blocker = await api('POST', '/v1/jobs', { type: 'serial', payload: { sleep_ms: 1500 } });
    await until(blocker.body.id, ['running']);
    const low = await api('POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 4 }, () => ({ type: 'serial', priority: 'low', payload: {} })),
    });
    const high = await api('POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 4 }, () => ({ type: 'serial', priority: 'high', payload: {} })),
    });
    expect([low.status, high.status]).toEqual([202, 202]);
    const ids = [...low.body.jobs, ...high.body.jobs].map((j: { id: string }) => j.id);
    const done = await Promise.all(ids.map((id) => until(id, ['succeeded'])));
    done.sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at));
    expect(done.slice(0, 4).map((j) => j.priority)).toEqual(Array(4).fill('high'));
  });

  it('delays a job with run_at', async () => {
    const runAt = new Date(Date.now() + 1200).toISOString();
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: {}, run_at: runAt });
    expect(r.body.state).toBe('delayed');
    const done = await until(r.body.id, ['succeeded']);
    expect(Date.parse(done.started_at)).toBeGreaterThanOrEqual(Date.parse(runAt) - 50);
  });

  it('cancels a delayed job, and a running one over the cancel channel (pub/sub across nodes)', async () => {
    const delayed = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 60_000).toISOString(),
    });
    const c1 = await api('POST', `/v1/jobs/${delayed.body.id}/cancel`);
    expect(c1.status).toBe(200);
    expect(c1.body.state).toBe('cancelled');

    const dir = mkdtempSync(path.join(markers, 'cancel-'));
    const long = await api('POST', '/v1/jobs', {
      type: 'serial',
      payload: { sleep_ms: 20_000, progress_steps: 20, marker: dir },
    });
    await until(long.body.id, ['running']);
    expect((await api('POST', `/v1/jobs/${long.body.id}/cancel`)).status).toBe(202);
    expect((await until(long.body.id, ['cancelled', 'succeeded', 'failed'], 5_000)).state).toBe('cancelled');
    expect(readdirSync(dir)).toEqual([]);
    expect((await api('POST', `/v1/jobs/${long.body.id}/cancel`)).status).toBe(409);
  });

  it('retries a failed job on request', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: { fail_times: 1 } });
    await until(r.body.id, ['failed']);
    const retry = await api('POST', `/v1/jobs/${r.body.id}/retry`);
    expect(retry.status).toBe(202);
    expect(retry.body).toMatchObject({ state: 'queued', attempts: 0 });
    expect((await until(r.body.id, ['failed', 'succeeded'])).state).toBe('failed');
  });

  it("streams a job's changes over SSE: worker → Redis pub/sub and job stream on the cluster → API", async () => {
    const r = await api('POST', '/v1/jobs', { type: 'serial', payload: { sleep_ms: 900, progress_steps: 3 } });
    const res = await fetch(`${web.url}/v1/jobs/${r.body.id}/events`, {
      headers: { authorization: `Bearer ${key}` },
      signal: AbortSignal.timeout(20_000),
    });
    expect(res.status).toBe(200);
    const text = await res.text(); // the stream ends after the terminal state
    const events = [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    expect(events).toContain('progress');
    expect(events.at(-1)).toBe('state');
    expect(text).toMatch(/"state":"succeeded"/);
  });

  it('re-enqueues jobs missing from Redis, from queues on different masters (reconciler, lock)', async () => {
    const dir = mkdtempSync(path.join(markers, 'reconcile-'));
    // Paused while they are lost, so no worker takes them first. (A job with a future run_at would not do: it waits
    // in the ledger, not in BullMQ, until it is due.)
    const queues = ['test', 'serial'].map((q) => env.queues.get(q));
    await Promise.all(queues.map((q) => q.pause()));
    const jobs = await Promise.all(
      ['test', 'serial', 'test', 'serial'].map(
        async (type) => (await api('POST', '/v1/jobs', { type, payload: { marker: dir } })).body,
      ),
    );
    // Lose them from Redis, as a crash between the ledger insert and the enqueue would.
    for (const j of jobs) expect(await env.queues.get(j.type).remove(j.id)).toBe(1);
    await Promise.all(queues.map((q) => q.resume()));
    const done = await Promise.all(jobs.map((j) => until(j.id, ['succeeded'])));
    expect(done.map((j) => j.attempts)).toEqual([1, 1, 1, 1]);
    for (const j of jobs) expect(readFileSync(path.join(dir, `${j.id}.done`), 'utf8')).toBe('1\n');
    expect(worker.output()).toMatch(/reconciler re-enqueued/);
  });

  it('keeps each queue in one slot: every BullMQ key of a queue lives on the master its hash tag names', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: {} });
    await until(r.body.id, ['succeeded']);
    for (const q of ['test', 'serial']) {
      const prefix = bullPrefix(env.config, q);
      const home = await cluster.nodeFor(`${prefix}:${q}:x`);
      const counts = await Promise.all(
        cluster.ports.map(async (port) => [port, await cluster.countKeys(port, `${prefix}:*`)] as const),
      );
      for (const [port, n] of counts) {
        if (port === home) expect(n).toBeGreaterThan(0);
        else expect(n).toBe(0);
      }
    }
  });
});
