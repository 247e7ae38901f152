// The console in a real browser (Debian's Chromium driven by playwright-core), over a real ledger, Redis, SMTP
// server and workers. Also the cross-site guard that /admin and /console share (src/api/session.ts).
// No Chromium is a failure, not a skip: install it with `apt-get install -y chromium` (.ci/run does).
import { existsSync, mkdirSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { serve } from '@hono/node-server';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createKey } from '../src/auth/keys.js';
import { client, createTestEnv, jobInState, ROOT, tenantWithKeys, type TestEnv, waitFor } from './helpers.js';
import { startSmtp, type TestSmtp } from './support/smtp.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'test/artifacts');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];
const LOST = 'lost.customer@example.com';

let env: TestEnv;
let smtp: TestSmtp;
let a: Awaited<ReturnType<typeof tenantWithKeys>>;
let b: Awaited<ReturnType<typeof tenantWithKeys>>;
let viewerKey: string;
let server: Server;
let base: string;
let browser: Browser;
let failedId: string;
let otherTenantJob: string;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH.`,
    );
  smtp = await startSmtp();
  smtp.rejectRcpt = (addr) => addr === LOST;
  env = await createTestEnv('console', { env: { SMTP_URL: smtp.url } });
  a = await tenantWithKeys(env);
  b = await tenantWithKeys(env);
  viewerKey = (await createKey(env.db, env.config.API_KEY_SECRET, a.tenant, 'viewer')).key;
  await env.startWorkers(['email']);
  const asA = client(env.app, a.clientKey);
  const email = (to: string) =>
    asA('POST', '/v1/jobs', { type: 'email', payload: { to, template: 'plain', subject: 'Welcome', text: 'Hello.' } });
  failedId = (await email(LOST)).body.id;
  const fine = (await email('someone.else@example.com')).body.id;
  await jobInState(asA, failedId, ['failed']);
  await jobInState(asA, fine, ['succeeded']);
  // Tenant B's job waits in its queue (no worker runs `test` here).
  otherTenantJob = (await client(env.app, b.clientKey)('POST', '/v1/jobs', { type: 'test', payload: {} })).body.id;

  server = serve({ fetch: env.app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  mkdirSync(SHOTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await env?.close();
  await smtp?.close();
});

const shot = (page: Page, name: string) =>
  page.screenshot({ path: path.join(SHOTS, `console-${name}.png`), fullPage: true });

async function logIn(key: string): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(`${base}/console`);
  expect(new URL(page.url()).pathname).toBe('/console/login');
  await page.getByLabel('API key').fill(key);
  await page.getByLabel('API key').press('Enter');
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  return { ctx, page };
}

/** The attempts table of the job page's timeline: one row per run, in order. */
const attemptRows = (page: Page) =>
  page.locator('section[aria-labelledby="timeline"] table').first().locator('tbody tr');

// A browser test does many page loads; on a loaded machine that takes longer than the default minute.
const SLOW = { timeout: 180_000 };

describe('console', () => {
  test(
    'an operator finds a failed email by its recipient, reads its story, retries it, and sees it run again and the retry audited',
    SLOW,
    async () => {
      const { ctx, page } = await logIn(a.operatorKey);
      const cookie = (await ctx.cookies()).find((c) => c.name === 'mj_session')!;
      expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
      expect(cookie.expires).toBeGreaterThan(Date.now() / 1000);
      await shot(page, 'overview');
      await expect(page.locator('figure svg').count()).resolves.toBeGreaterThan(0);

      await page.getByRole('link', { name: 'Jobs', exact: true }).click();
      await page.getByRole('searchbox').fill(LOST);
      await page.getByRole('searchbox').press('Enter');
      const links = page.locator('table tbody a');
      await expect(links.count()).resolves.toBe(1);
      expect(await links.first().getAttribute('href')).toBe(`/console/jobs/${failedId}`);
      await shot(page, 'search');

      await links.first().click();
      await page.getByRole('heading', { level: 1, name: `Job ${failedId}` }).waitFor();
      const error = page.locator('section[aria-labelledby="error"]');
      expect(await error.textContent()).toContain('recipients_rejected');
      expect(await error.textContent()).toContain('550');
      await expect(attemptRows(page).count()).resolves.toBe(1);
      expect(await attemptRows(page).first().textContent()).toContain('recipients_rejected');
      expect(await page.locator('section[aria-labelledby="recipients"]').textContent()).toContain(LOST);
      await shot(page, 'job');

      await page.getByRole('button', { name: 'Retry' }).click();
      // The page follows the job live (console SSE) and shows the second run once it is over.
      await waitFor(
        async () => (await attemptRows(page).count()) === 2 && !(await page.locator('[data-live-job]').count()),
        {
          what: 'the retried job to run again on the page',
          timeout: 30_000,
        },
      );
      const runs = await attemptRows(page).allTextContents();
      expect(runs[1]).toContain('recipients_rejected');
      const audit = page.locator('section[aria-labelledby="audit"] tbody tr');
      await expect(audit.count()).resolves.toBe(1);
      const entry = await audit.first().textContent();
      expect(entry).toContain('job.retry');
      expect(entry).toContain('console');
      expect(entry).toContain('operator');

      for (const name of ['tenants', 'schedules', 'queues']) {
        await page.getByRole('link', { name: name[0].toUpperCase() + name.slice(1), exact: true }).click();
        await page.getByRole('heading', { level: 1 }).waitFor();
        await shot(page, name);
      }
      expect(await page.locator('table').textContent()).toContain('email');
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.getByLabel('API key').waitFor();
      expect((await page.goto(`${base}/console/jobs/${failedId}`))?.url()).toBe(`${base}/console/login`);
      await ctx.close();
    },
  );

  test(
    "a client key sees its own tenant only: another tenant's job is a 404, and search does not find it",
    SLOW,
    async () => {
      const { ctx, page } = await logIn(b.clientKey);
      expect((await page.goto(`${base}/console/jobs/${failedId}`))?.status()).toBe(404);
      await page.goto(`${base}/console/jobs?q=${encodeURIComponent(LOST)}`);
      expect(await page.locator('main').textContent()).toContain('No jobs.');
      expect((await page.goto(`${base}/console/tenants`))?.status()).toBe(403);
      expect((await page.goto(`${base}/console/jobs/${otherTenantJob}`))?.status()).toBe(200);
      await page.getByRole('button', { name: 'Cancel' }).waitFor();
      await shot(page, 'client-job');
      await ctx.close();
    },
  );

  test(
    'a viewer sees everything, has no buttons, and a forged POST is refused with or without the token',
    SLOW,
    async () => {
      const { ctx, page } = await logIn(viewerKey);
      await page.goto(`${base}/console/jobs/${otherTenantJob}`);
      await page.getByRole('heading', { level: 1, name: `Job ${otherTenantJob}` }).waitFor();
      expect(await page.locator('main button').count()).toBe(0);
      await page.goto(`${base}/console/queues`);
      expect(await page.locator('main button').count()).toBe(0);
      const token = await page.locator('input[name="_csrf"]').first().inputValue();
      const forged = await page.evaluate(
        async ([id, csrf]) => {
          const post = (body: string) =>
            fetch(`/console/jobs/${id}/cancel`, {
              method: 'POST',
              headers: { 'content-type': 'application/x-www-form-urlencoded' },
              body,
              redirect: 'manual',
            }).then((r) => r.status);
          return [await post(''), await post(`_csrf=${encodeURIComponent(csrf)}`)];
        },
        [otherTenantJob, token],
      );
      expect(forged).toEqual([403, 403]);
      expect((await client(env.app, b.clientKey)('GET', `/v1/jobs/${otherTenantJob}`)).body.state).toBe('queued');
      // Bull Board: readable, read-only.
      expect((await page.goto(`${base}/admin/queues`))?.status()).toBe(200);
      const put = await page.evaluate(() =>
        fetch('/admin/queues/api/queues/email/pause', { method: 'PUT' }).then((r) => r.status),
      );
      expect(put).toBe(403);
      expect(await env.queues.get('email').isPaused()).toBe(false);
      await ctx.close();
    },
  );

  test('a cross-site POST to /admin is refused; the same call from the same origin works', SLOW, async () => {
    const ctx = await browser.newContext({ httpCredentials: { username: 'operator', password: a.operatorKey } });
    const page = await ctx.newPage();
    // A page of another site posts to the dashboard's API; the browser holds the operator's Basic password.
    await page.goto(`${base.replace('127.0.0.1', 'localhost')}/console/login`);
    // (A 401 is the challenge the browser answers with the password it holds; the answer to that is what counts.)
    const refused = page.waitForResponse((r) => r.url().endsWith('/api/queues/test/add') && r.status() !== 401);
    // A form of that page, posting JSON-ish text/plain (no preflight) where the browser sends the password along.
    await page.setContent(
      `<form method="post" enctype="text/plain" action="${base}/admin/queues/api/queues/test/add">` +
        `<input name='{"name":"forged","data":{"x":"' value='"}}'><button>Win a prize</button></form>`,
    );
    await page.getByRole('button', { name: 'Win a prize' }).click();
    expect((await refused).status()).toBe(403);
    await page.waitForURL(/\/api\/queues\/test\/add$/);
    expect(await env.queues.get('test').count()).toBe(1);

    await page.goto(`${base}/admin/queues`);
    const status = await page.evaluate(() =>
      fetch('/admin/queues/api/queues/test/pause', { method: 'PUT' }).then((r) => r.status),
    );
    expect(status).toBe(200);
    expect(await env.queues.get('test').isPaused()).toBe(true);
    await env.queues.get('test').resume();
    await ctx.close();
  });
});
