// The SSRF guard with the default policy: loopback, private, link-local and metadata targets are refused,
// by address, after DNS resolution, and after every redirect.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkUrl, isForbiddenAddress, RefusedError } from '../src/webhooks/guard.js';
import { postJson } from '../src/webhooks/http.js';
import { client, createTestEnv, sleep, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';
import { startReceiver, type Receiver } from './support/receiver.js';

let env: TestEnv;
let rx: Receiver;
let api: ReturnType<typeof client>;

beforeAll(async () => {
  env = await createTestEnv('webhook_ssrf', { env: { WEBHOOK_BACKOFF_MS: '100', WEBHOOK_TIMEOUT_MS: '1000' } });
  expect(env.config.WEBHOOK_ALLOW_PRIVATE).toBe(false);
  api = client(env.app, (await tenantWithKeys(env)).clientKey);
  rx = await startReceiver();
  await env.startWorkers(['test']);
});

afterAll(async () => {
  await rx?.close();
  await env?.close();
});

const strict = { allowPrivate: false };

describe('SSRF guard', () => {
  it('classifies addresses', () => {
    for (const ip of [
      '127.0.0.1',
      '127.1.2.3',
      '10.0.0.5',
      '172.20.1.1',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '::1',
      '::',
      'fe80::1',
      'fd00:ec2::254',
      '::ffff:127.0.0.1',
      '::ffff:a9fe:a9fe',
      '[::1]',
    ]) {
      expect(isForbiddenAddress(ip), ip).toBe(true);
    }
    for (const ip of ['93.184.216.34', '8.8.8.8', '2606:4700:4700::1111', '::ffff:8.8.8.8'])
      expect(isForbiddenAddress(ip), ip).toBe(false);
  });

  it('refuses other schemes, credentials, and address literals in any spelling', () => {
    for (const url of [
      'ftp://example.com/',
      'file:///etc/passwd',
      'http://user:pw@example.com/',
      'http://127.0.0.1/',
      'http://2130706433/',
      'http://0x7f.0.0.1/',
      'http://[::1]:80/',
      'http://169.254.169.254/latest/meta-data/',
      'http://[::ffff:169.254.169.254]/',
    ]) {
      expect(() => checkUrl(url, strict), url).toThrow(RefusedError);
    }
    expect(checkUrl('https://example.com/hook', strict).hostname).toBe('example.com');
    expect(checkUrl('http://127.0.0.1/', { allowPrivate: true }).hostname).toBe('127.0.0.1');
  });

  it('refuses a name that resolves to a loopback address (checked after DNS)', async () => {
    const port = new URL(rx.url).port;
    await expect(postJson(`http://localhost:${port}/dns`, '{}', {}, strict, 2000)).rejects.toThrow(RefusedError);
    expect(rx.received.some((r) => r.path === '/dns')).toBe(false);
  });

  it('checks every redirect target again', async () => {
    // Allow the receiver's own address, so only the redirect target is judged.
    const policy = { allowPrivate: false, allow: (a: string) => a === '127.0.0.1' };
    rx.on('/to-metadata', 'redirect:http://169.254.169.254/latest/meta-data/');
    rx.on('/to-loopback6', `redirect:http://[::1]:${new URL(rx.url).port}/ok`);
    rx.on('/to-ok', `redirect:${rx.url}/ok`);
    await expect(postJson(`${rx.url}/to-metadata`, '{}', {}, policy, 2000)).rejects.toThrow(/169\.254\.169\.254/);
    await expect(postJson(`${rx.url}/to-loopback6`, '{}', {}, policy, 2000)).rejects.toThrow(RefusedError);
    expect(await postJson(`${rx.url}/to-ok`, '{}', {}, policy, 2000)).toMatchObject({
      status: 200,
      url: `${rx.url}/ok`,
    });
  });

  it('refuses a callback_url naming 127.0.0.1, ::1 or 169.254.169.254 at submission: 422 on the field, nothing accepted', async () => {
    for (const url of [`${rx.url}/hook`, 'http://[::1]/hook', 'http://169.254.169.254/latest/meta-data/']) {
      const r = await api('POST', '/v1/jobs', { type: 'test', payload: {}, callback_url: url });
      expect(r.status, url).toBe(422);
      expect(r.body.errors).toEqual([
        { path: 'callback_url', message: expect.stringMatching(/private, loopback.*WEBHOOK_ALLOW_PRIVATE=true/) },
      ]);
    }
    const bulk = await api('POST', '/v1/jobs/bulk', {
      jobs: [
        { type: 'test', payload: {}, callback_url: 'https://example.com/ok' },
        { type: 'test', payload: {}, callback_url: 'http://10.1.2.3/' },
      ],
    });
    expect(bulk.status).toBe(422);
    expect(bulk.body.errors.map((e: { path: string }) => e.path)).toEqual(['jobs.1.callback_url']);
  });

  it('refuses at delivery, once, without retrying, a callback whose name resolves to a loopback address', async () => {
    const port = new URL(rx.url).port;
    const local = await api('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      callback_url: `http://localhost:${port}/hook`,
    });
    for (const job of [local]) {
      expect(job.status).toBe(202);
      const rows = await waitFor(
        async () => {
          const r = await api('GET', `/v1/jobs/${job.body.id}/webhooks`);
          return r.body.items.length ? r.body.items : undefined;
        },
        { what: 'the refused try' },
      );
      expect(rows).toMatchObject([{ attempt: 1, outcome: 'refused', status_code: null }]);
      expect(rows[0].error).toMatch(/refused/);
    }
    await sleep(800);
    expect((await api('GET', `/v1/jobs/${local.body.id}/webhooks`)).body.items).toHaveLength(1);
    expect(rx.received.some((r) => r.path === '/hook')).toBe(false);
  });

  it('refuses a callback_url that is not http(s) at submission', async () => {
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: {}, callback_url: 'gopher://example.com/' });
    expect(r.status).toBe(400);
    expect(r.body.errors[0].path).toBe('callback_url');
  });
});
