// The browser session shared by /console and /admin (src/api/session.ts), over real Redis and PostgreSQL, with the
// app called in process: cookie flags, CSRF token, same-origin check, logout, and a revoked key ending its sessions.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createKey, revokeKey } from '../src/auth/keys.js';
import { client, createTestEnv, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;
let jobId: string;

beforeAll(async () => {
  env = await createTestEnv('console_session');
  keys = await tenantWithKeys(env);
  jobId = (await client(env.app, keys.clientKey)('POST', '/v1/jobs', { type: 'test', payload: {} })).body.id;
});

afterAll(async () => {
  await env?.close();
});

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

async function login(key: string, headers: Record<string, string> = {}) {
  return env.app.request('/console/login', { method: 'POST', headers: { ...FORM, ...headers }, body: form({ key }) });
}

/** Logs in; returns the Cookie header to send back and the page's CSRF token. */
async function session(key: string) {
  const res = await login(key);
  expect(res.status).toBe(303);
  const cookie = res.headers.get('set-cookie')!.split(';')[0];
  const page = await (await env.app.request('/console/jobs', { headers: { cookie } })).text();
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1];
  return { cookie, csrf };
}

describe('console session', () => {
  test('login sets an HttpOnly, SameSite=Strict, expiring cookie (Secure behind TLS); a wrong key gets the form again', async () => {
    const res = await login(keys.operatorKey);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/console');
    const cookie = res.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^mj_session=[\w-]{40,};/);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).toMatch(/Max-Age=28800/);
    expect(cookie).not.toMatch(/Secure/);
    expect((await login(keys.operatorKey, { 'x-forwarded-proto': 'https' })).headers.get('set-cookie')).toMatch(
      /Secure/,
    );
    const wrong = await login('mj_not-a-key', { accept: 'text/html' });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    expect(await wrong.text()).toContain('<input id="key" type="password" name="key"');
    // Not a browser: the same refusal as problem+json.
    const plain = await login('mj_not-a-key');
    expect(plain.status).toBe(401);
    expect(plain.headers.get('content-type')).toBe('application/problem+json');
  });

  test('a login or a change from another site is refused; a change without the session token is refused', async () => {
    expect((await login(keys.operatorKey, { 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await login(keys.operatorKey, { origin: 'https://evil.example' })).status).toBe(403);
    const { cookie, csrf } = await session(keys.operatorKey);
    const cancel = (body: string, headers: Record<string, string> = {}) =>
      env.app.request(`/console/jobs/${jobId}/cancel`, {
        method: 'POST',
        headers: { ...FORM, cookie, ...headers },
        body,
      });
    expect((await cancel(form({ _csrf: csrf }), { 'sec-fetch-site': 'same-site' })).status).toBe(403);
    expect((await cancel(form({}))).status).toBe(403);
    expect((await cancel(form({ _csrf: `${csrf.slice(1)}x` }))).status).toBe(403);
    expect((await client(env.app, keys.clientKey)('GET', `/v1/jobs/${jobId}`)).body.state).toBe('queued');
    const done = await cancel(form({ _csrf: csrf }), { 'sec-fetch-site': 'same-origin' });
    expect(done.status).toBe(303);
    expect((await client(env.app, keys.clientKey)('GET', `/v1/jobs/${jobId}`)).body.state).toBe('cancelled');
  });

  test('one session for /console and /admin; logout ends it', async () => {
    const { cookie, csrf } = await session(keys.operatorKey);
    expect((await env.app.request('/admin/queues', { headers: { cookie } })).status).toBe(200);
    const out = await env.app.request('/console/logout', {
      method: 'POST',
      headers: { ...FORM, cookie },
      body: form({ _csrf: csrf }),
    });
    expect(out.status).toBe(303);
    expect(out.headers.get('set-cookie')).toMatch(/^mj_session=;/);
    const after = await env.app.request('/console/jobs', { headers: { cookie } });
    expect(after.status).toBe(303);
    expect(after.headers.get('location')).toBe('/console/login');
    expect((await env.app.request('/admin/queues', { headers: { cookie } })).status).toBe(401);
  });

  test('revoking the key ends its sessions at once', async () => {
    const key = await createKey(env.db, env.config.API_KEY_SECRET, keys.tenant, 'operator');
    const { cookie } = await session(key.key);
    expect((await env.app.request('/console/jobs', { headers: { cookie } })).status).toBe(200);
    expect(await revokeKey(env.db, key.id)).toBe(true);
    const after = await env.app.request('/console/jobs', { headers: { cookie } });
    expect(after.status).toBe(303);
    expect(after.headers.get('location')).toBe('/console/login');
  });

  test('bad search input is a 400 page naming the field', async () => {
    const { cookie } = await session(keys.operatorKey);
    const res = await env.app.request('/console/jobs?q=ab&created_after=yesterday', {
      headers: { cookie, accept: 'text/html' },
    });
    expect(res.status).toBe(400);
    const page = await res.text();
    expect(page).toContain('q: type at least 3 characters');
    expect(page).toContain('created_after: not a date and time');
  });
});
