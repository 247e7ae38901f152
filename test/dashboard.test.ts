// The Bull Board dashboard in a real browser: Debian's Chromium driven by playwright-core.
// No Chromium is a failure, not a skip: install it with `apt-get install -y chromium` (.ci/run does).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { serve } from '@hono/node-server';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { client, createTestEnv, ROOT, tenantWithKeys, uniqueName, waitFor, type TestEnv } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'test/artifacts');
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;
let server: Server;
let base: string;
let browser: Browser;
let failedId: string;
const marker = path.join(ROOT, 'var/test', uniqueName('dashboard'));

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM}: the dashboard test needs it. Install it: apt-get install -y chromium (or set CHROMIUM_PATH).`,
    );
  }
  env = await createTestEnv('dashboard');
  keys = await tenantWithKeys(env);
  await env.startWorkers(['test']);
  const cl = client(env.app, keys.clientKey);
  const failed = await cl('POST', '/v1/jobs', { type: 'test', payload: { permanent: true, started_marker: marker } });
  failedId = failed.body.id;
  await cl('POST', '/v1/jobs', { type: 'test', payload: { value: 'fine' } });
  await waitFor(async () => (await cl('GET', `/v1/jobs/${failedId}`)).body.state === 'failed', {
    what: 'the job to fail',
  });

  server = serve({ fetch: env.app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  mkdirSync(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await env?.close();
});

describe('/admin/queues', () => {
  test('without a key the browser gets 401 and a Basic challenge; a client key gets 403', async () => {
    // With nothing to answer the challenge, Chromium abandons the navigation; the 401 it got is what counts.
    const anon = await browser.newContext();
    const page = await anon.newPage();
    const seen = new Promise<import('playwright-core').Response>((resolve) =>
      page.on('response', (res) => res.url().endsWith('/admin/queues') && resolve(res)),
    );
    await page.goto(`${base}/admin/queues`).catch(() => undefined);
    const r = await seen;
    expect(r.status()).toBe(401);
    expect(r.headers()['www-authenticate']).toMatch(/^Basic /);
    await anon.close();

    const asClient = await browser.newContext({ httpCredentials: { username: 'me', password: keys.clientKey } });
    expect((await (await asClient.newPage()).goto(`${base}/admin/queues`))?.status()).toBe(403);
    await asClient.close();

    const wrong = await browser.newContext();
    const bad = await wrong.request.get(`${base}/admin/queues`, {
      headers: { authorization: `Basic ${Buffer.from('me:mj_not-a-key').toString('base64')}` },
    });
    expect(bad.status()).toBe(401);
    await wrong.close();
  });

  test('an operator logs in with HTTP Basic, sees the four queues and the failed job, with no request off the machine', async () => {
    const ctx = await browser.newContext({
      httpCredentials: { username: 'operator', password: keys.operatorKey },
      viewport: { width: 1400, height: 1000 },
    });
    const offMachine: string[] = [];
    await ctx.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.protocol === 'data:' || url.hostname === '127.0.0.1') return route.continue();
      offMachine.push(url.href);
      return route.abort('internetdisconnected');
    });
    const page = await ctx.newPage();
    const r = await page.goto(`${base}/admin/queues`);
    expect(r?.status()).toBe(200);
    for (const name of ['recommendations', 'email', 'image', 'report']) {
      await page.getByText(name, { exact: true }).first().waitFor({ timeout: 20_000 });
    }
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-overview.png'), fullPage: true });

    await page.goto(`${base}/admin/queues/queue/test?status=failed`);
    await page.getByText(failedId).first().waitFor({ timeout: 20_000 });
    const shot = path.join(ARTIFACTS, 'dashboard-failed-job.png');
    await page.screenshot({ path: shot, fullPage: true });
    await page
      .getByText(/this payload can never succeed/)
      .first()
      .waitFor({ timeout: 10_000 });
    expect(readFileSync(shot).subarray(1, 4).toString()).toBe('PNG');
    expect(offMachine).toEqual([]);
    await ctx.close();
  });

  test("the dashboard's actions are audited, and its retry goes through the ledger", async () => {
    const ctx = await browser.newContext({ httpCredentials: { username: 'operator', password: keys.operatorKey } });
    await (await ctx.newPage()).goto(`${base}/admin/queues`);
    // The calls the dashboard's buttons make, with the browser's credentials.
    expect((await ctx.request.put(`${base}/admin/queues/api/queues/test/pause`)).status()).toBe(200);
    expect(await env.queues.get('test').isPaused()).toBe(true);
    expect((await ctx.request.put(`${base}/admin/queues/api/queues/test/resume`)).status()).toBe(200);
    expect((await ctx.request.put(`${base}/admin/queues/api/queues/test/${failedId}/retry`)).status()).toBe(200);
    await ctx.close();

    // The retried job ran a second time (a BullMQ-only retry would have been skipped by the ledger).
    await waitFor(
      () =>
        existsSync(path.join(marker, `${failedId}.started`)) &&
        readFileSync(path.join(marker, `${failedId}.started`), 'utf8')
          .trim()
          .split('\n').length === 2,
      {
        what: 'the retried job to run again',
      },
    );
    const op = client(env.app, keys.operatorKey);
    const audit = await op('GET', '/v1/audit?limit=3');
    expect(audit.body.items.map((e: { action: string; target: string }) => [e.action, e.target])).toEqual([
      ['dashboard.job_retry', failedId],
      ['dashboard.resume', 'test'],
      ['dashboard.pause', 'test'],
    ]);
    expect(audit.body.items[0].actor).toMatchObject({ role: 'operator', tenant: keys.tenant });
  });

  test('emptying a queue from the dashboard cancels its waiting jobs in the ledger too (else the reconciler would put them back)', async () => {
    const cl = client(env.app, keys.clientKey);
    const op = client(env.app, keys.operatorKey);
    await op('POST', '/v1/queues/serial/pause');
    const waiting = await cl('POST', '/v1/jobs', { type: 'serial', payload: {} });
    const later = await cl('POST', '/v1/jobs', {
      type: 'serial',
      payload: {},
      run_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    const ctx = await browser.newContext({ httpCredentials: { username: 'operator', password: keys.operatorKey } });
    expect((await ctx.request.put(`${base}/admin/queues/api/queues/serial/empty`)).status()).toBe(200);
    await ctx.close();
    expect((await cl('GET', `/v1/jobs/${waiting.body.id}`)).body.state).toBe('cancelled');
    // Drain leaves delayed jobs, and so does the ledger.
    expect((await cl('GET', `/v1/jobs/${later.body.id}`)).body.state).toBe('delayed');
    expect((await env.queues.get('serial').getJobCounts('waiting', 'prioritized')).prioritized).toBe(0);
    expect((await op('GET', '/v1/audit?limit=1')).body.items[0]).toMatchObject({
      action: 'dashboard.empty',
      target: 'serial',
    });
    await op('POST', '/v1/queues/serial/resume');
  });

  test('/metrics takes the same operator auth', async () => {
    const ctx = await browser.newContext({ httpCredentials: { username: 'operator', password: keys.operatorKey } });
    const r = await (await ctx.newPage()).goto(`${base}/metrics`);
    expect(r?.status()).toBe(200);
    expect(await r?.text()).toContain('jobs_completed_total');
    await ctx.close();
  });
});
