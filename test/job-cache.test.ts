// Status reads from memory: a job event drops the entry at once, the TTL bounds a change made without one, and a
// hub that is not receiving serves nothing from memory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/api/app.js';
import { EventHub } from '../src/api/event-hub.js';
import { loadConfig } from '../src/config.js';
import * as ledger from '../src/db/jobs.js';
import { publishJobEvent } from '../src/events.js';
import { client, createTestEnv, silentLog, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let t: Awaited<ReturnType<typeof tenantWithKeys>>;
let api: ReturnType<typeof client>;
const TTL = 1500;

beforeAll(async () => {
  env = await createTestEnv('job-cache', { env: { STATUS_CACHE_MS: String(TTL) } });
  t = await tenantWithKeys(env);
  api = client(env.app, t.clientKey);
  await waitFor(() => env.hub.receiving);
});
afterAll(() => env?.close());

const sneak = (id: string, progress: number) =>
  env.db.updateTable('jobs').set({ progress }).where('id', '=', id).execute();

describe('status cache', () => {
  it('answers from memory until the TTL, when a change came without an event', async () => {
    const { body: job } = await api('POST', '/v1/jobs', { type: 'test', payload: {} });
    expect((await api('GET', `/v1/jobs/${job.id}`)).body.progress).toBe(0);
    await sneak(job.id, 42);
    // Served from memory: the hand edit published nothing.
    expect((await api('GET', `/v1/jobs/${job.id}`)).body.progress).toBe(0);
    await new Promise((r) => setTimeout(r, TTL + 50));
    expect((await api('GET', `/v1/jobs/${job.id}`)).body.progress).toBe(42);
  });

  it('re-reads a job that is still being polled before its entry lapses, so a change without an event shows within the TTL', async () => {
    const { body: job } = await api('POST', '/v1/jobs', { type: 'test', payload: {} });
    await api('GET', `/v1/jobs/${job.id}`);
    await sneak(job.id, 5);
    const t0 = Date.now();
    let seen = 0;
    while (seen !== 5 && Date.now() - t0 < 3 * TTL) {
      seen = (await api('GET', `/v1/jobs/${job.id}`)).body.progress;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(seen).toBe(5);
    // Within the TTL, plus a ledger read's time on a loaded machine.
    expect(Date.now() - t0).toBeLessThan(TTL + 500);
  });

  it('drops an entry when the job event arrives, so the next read sees the ledger', async () => {
    const { body: job } = await api('POST', '/v1/jobs', { type: 'test', payload: {} });
    expect((await api('GET', `/v1/jobs/${job.id}`)).body.progress).toBe(0);
    await sneak(job.id, 7);
    const row = (await ledger.findJob(env.db, job.id))!;
    const t0 = Date.now();
    await publishJobEvent(env.redis, env.config, 'progress', row);
    await waitFor(async () => (await api('GET', `/v1/jobs/${job.id}`)).body.progress === 7, { interval: 5 });
    expect(Date.now() - t0).toBeLessThan(TTL / 2);
  });

  it("shows this process's own cancel at once, and keeps tenants apart", async () => {
    const { body: job } = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    expect((await api('GET', `/v1/jobs/${job.id}`)).body.state).toBe('delayed');
    expect((await api('POST', `/v1/jobs/${job.id}/cancel`)).status).toBe(200);
    expect((await api('GET', `/v1/jobs/${job.id}`)).body.state).toBe('cancelled');
    const other = await tenantWithKeys(env);
    expect((await client(env.app, other.clientKey)('GET', `/v1/jobs/${job.id}`)).status).toBe(404);
  });

  it('serves nothing from memory while its event hub is not receiving', async () => {
    const hub = EventHub.create(env.config);
    const config = loadConfig({ ...env.env, STATUS_CACHE_MS: '60000' });
    const app = createApp({
      config,
      db: env.db,
      redis: env.redis,
      queues: env.queues,
      registry: env.registry,
      storage: env.storage,
      log: silentLog,
      hub,
    });
    const call = client(app, t.clientKey);
    await waitFor(() => hub.receiving);
    const { body: job } = await call('POST', '/v1/jobs', { type: 'test', payload: {} });
    await call('GET', `/v1/jobs/${job.id}`);
    await sneak(job.id, 9);
    expect((await call('GET', `/v1/jobs/${job.id}`)).body.progress).toBe(0);
    await hub.close();
    expect(hub.receiving).toBe(false);
    expect((await call('GET', `/v1/jobs/${job.id}`)).body.progress).toBe(9);
  });
});
