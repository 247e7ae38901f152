// What a new user meets first: validation messages that say what to send, 405 with Allow, 415, the Bearer hint, and
// downloads named with their extension. In process against real PostgreSQL and Redis, with real image and report jobs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeImage } from './fixtures/images.js';
import { client, createTestEnv, jobInState, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;
let api: ReturnType<typeof client>;

beforeAll(async () => {
  env = await createTestEnv('first_hour', { testJobs: false, env: { TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '0' } });
  keys = await tenantWithKeys(env);
  api = client(env.app, keys.clientKey);
});
afterAll(() => env?.close());

const errorsOf = async (body: unknown) => {
  const r = await api('POST', '/v1/jobs', body);
  expect(r.status).toBe(400);
  expect(r.headers.get('content-type')).toContain('application/problem+json');
  return r.body.errors as { path: string; message: string }[];
};

describe('validation messages say what to send', () => {
  it('a missing field says it is required and what it takes', async () => {
    expect(await errorsOf({ payload: {} })).toEqual([{ path: 'type', message: 'required: send a string' }]);
    expect(await errorsOf({ type: 'report', payload: {} })).toEqual([
      { path: 'payload.kind', message: 'required: send one of: "jobs", "ratings"' },
    ]);
  });

  it('a missing discriminator lists what it may be', async () => {
    expect(await errorsOf({ type: 'email', payload: { to: 'a@example.com' } })).toEqual([
      {
        path: 'payload.template',
        message: 'required: send one of: "welcome", "recommendations", "report_ready", "plain"',
      },
    ]);
  });

  it('a limit names the limit', async () => {
    const to = Array.from({ length: 51 }, (_, i) => `u${i}@example.com`);
    const errors = await errorsOf({ type: 'email', payload: { to, template: 'plain', subject: 's', text: 't' } });
    expect(errors).toHaveLength(1);
    expect(errors[0].path).toBe('payload.to');
    expect(errors[0].message).toMatch(/^at most 50 recipients/);
    expect(await errorsOf({ type: 'recommendations', payload: { user_id: 'u1', limit: 500 } })).toEqual([
      { path: 'payload.limit', message: 'must be at most 100' },
    ]);
  });

  it('a union points at the field that failed, with the alternatives', async () => {
    expect(await errorsOf({ type: 'recommendations', payload: { user_id: 42 } })).toEqual([
      {
        path: 'payload.user_id',
        message: 'must be a string, not a number (accepted here: {user_id, limit?} or {all_users: true})',
      },
    ]);
    expect(await errorsOf({ type: 'email', payload: { to: 'a@example.com', template: 'hello' } })).toEqual([
      {
        path: 'payload.template',
        message: '\'template\' must be one of: "welcome", "recommendations", "report_ready", "plain"',
      },
    ]);
  });

  it('an enum lists its values, a date-time shows its form, an unknown field says to remove it', async () => {
    expect(
      await errorsOf({ type: 'report', payload: { kind: 'jobs' }, priority: 'urgent', run_at: 'soon', tenant: 'x' }),
    ).toEqual([
      { path: 'priority', message: 'must be one of: "high", "normal", "low"' },
      { path: 'run_at', message: 'must be an ISO 8601 date-time with an offset, e.g. 2026-12-01T09:00:00Z' },
      { path: '(body)', message: "unknown field 'tenant': remove it" },
    ]);
  });

  it('a body not declared as JSON is a 415 that says to send application/json', async () => {
    const r = await api('POST', '/v1/jobs', '{"type":"report","payload":{"kind":"jobs"}}', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    expect(r.status).toBe(415);
    expect(r.body.detail).toMatch(/Content-Type: application\/json/);
  });

  it('a wrong method is a 405 with Allow', async () => {
    const del = await api('DELETE', '/v1/jobs');
    expect(del.status).toBe(405);
    expect(del.headers.get('allow')).toBe('GET, POST, HEAD');
    expect(del.headers.get('content-type')).toContain('application/problem+json');
    const get = await api('GET', '/v1/jobs/0190a4c2-6f1e-7000-8000-000000000000/cancel');
    expect([get.status, get.headers.get('allow')]).toEqual([405, 'POST']);
    // A path no route has stays a 404.
    expect((await api('GET', '/v1/nothing-here')).status).toBe(404);
  });

  it('a key sent without `Bearer ` gets a hint', async () => {
    const bare = await client(env.app)('GET', '/v1/jobs', undefined, { authorization: keys.clientKey });
    expect(bare.status).toBe(401);
    expect(bare.body.detail).toMatch(/without its scheme.*Authorization: Bearer <key>/);
    const token = await client(env.app)('GET', '/v1/jobs', undefined, { authorization: `Token ${keys.clientKey}` });
    expect(token.status).toBe(401);
    expect(token.body.detail).toMatch(/Authorization: Bearer <key>/);
  });
});

describe('downloads carry Content-Disposition with a filename and extension', () => {
  it('a report as jobs-<day>.csv, an image variant as <name>.webp, an upload as <id>.png', async () => {
    const workers = await env.startWorkers(['image', 'report']);
    try {
      const up = await env.app.request('/v1/files', {
        method: 'POST',
        headers: { authorization: `Bearer ${keys.clientKey}` },
        body: new Uint8Array(await makeImage('png', 64, 48)),
      });
      const fileId = ((await up.json()) as { id: string }).id;
      const report = await api('POST', '/v1/jobs', {
        type: 'report',
        payload: { kind: 'jobs', to: '2026-12-01T12:00:00Z', format: 'csv' },
      });
      const image = await api('POST', '/v1/jobs', {
        type: 'image',
        payload: { file_id: fileId, variants: [{ name: 'thumb', width: 32 }] },
      });
      const done = [await jobInState(api, report.body.id, ['succeeded', 'failed'], 60_000)];
      done.push(await jobInState(api, image.body.id, ['succeeded', 'failed'], 60_000));
      expect(done.map((j) => j.state)).toEqual(['succeeded', 'succeeded']);

      const disposition = async (id: string) =>
        (
          await env.app.request(`/v1/files/${id}`, { headers: { authorization: `Bearer ${keys.clientKey}` } })
        ).headers.get('content-disposition');
      expect(await disposition(done[0].result.file_id)).toBe('attachment; filename="jobs-2026-12-01.csv"');
      expect(await disposition(done[1].result.variants[0].file_id)).toBe('inline; filename="thumb.webp"');
      expect(await disposition(fileId)).toBe(`inline; filename="${fileId}.png"`);
    } finally {
      await workers.close(10_000);
    }
  });
});
