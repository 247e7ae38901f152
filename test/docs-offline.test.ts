// /docs in a real browser with no network beyond this machine: Debian's Chromium driven by playwright-core, every
// request to a non-loopback address aborted and recorded. The reference must render from our own assets.
// No Chromium is a failure, not a skip: install it with `apt-get install -y chromium` (.ci/run does).
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestEnv, type TestEnv } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];

let env: TestEnv;
let server: Server;
let base: string;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH.`,
    );
  }
  env = await createTestEnv('docs');
  server = serve({ fetch: env.app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});

afterAll(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await env?.close();
});

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

test('/docs renders the API reference with every request off the machine refused', async () => {
  const ctx = await browser.newContext();
  const offMachine: string[] = [];
  const served: string[] = [];
  await ctx.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || url.protocol === 'blob:' || LOOPBACK.has(url.hostname)) {
      served.push(url.pathname);
      return route.continue();
    }
    offMachine.push(url.href);
    return route.abort('internetdisconnected');
  });
  const page = await ctx.newPage();
  const r = await page.goto(`${base}/docs`);
  expect(r?.status()).toBe(200);
  // An operation's title from the OpenAPI document, rendered by the script we serve.
  await page.getByText('Submit a job', { exact: true }).first().waitFor({ timeout: 30_000 });
  expect(served).toContain('/docs/scalar.js');
  expect(served).toContain('/openapi.json');
  expect(offMachine).toEqual([]);
  await ctx.close();
});

test('the OpenAPI description points at the contract inside the repository', async () => {
  const doc = (await (await env.app.request('/openapi.json')).json()) as { info: { description: string } };
  expect(doc.info.description).toContain('docs/api.md');
  expect(existsSync(new URL('../docs/api.md', import.meta.url))).toBe(true);
});
