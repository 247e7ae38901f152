// Each job type keeps its meaningful steps with the job (ctx.jobLog): email per recipient, image per variant, report
// rows, recommendations strategy and model age. Real processors, real PostgreSQL and Redis; mail goes to files.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeImage } from './fixtures/images.js';
import { client, createTestEnv, jobInState, tenantWithKeys, type TestEnv } from './helpers.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
let clientKey: string;

beforeAll(async () => {
  env = await createTestEnv('job-logs-types', { testJobs: false, env: { TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '0' } });
  const t = await tenantWithKeys(env);
  clientKey = t.clientKey;
  api = client(env.app, clientKey);
  await env.startWorkers(['email', 'image', 'report', 'recommendations']);
});
afterAll(async () => env?.close());

async function run(type: string, payload: unknown) {
  const r = await api('POST', '/v1/jobs', { type, payload });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  const done = await jobInState(api, r.body.id, ['succeeded', 'failed'], 60_000);
  expect(done.state, JSON.stringify(done.error)).toBe('succeeded');
  const logs = await api('GET', `/v1/jobs/${r.body.id}/logs`);
  return logs.body.items as { message: string; fields: Record<string, unknown> }[];
}

describe('job logs of each type', () => {
  it('email: one line per recipient with its outcome', async () => {
    const lines = await run('email', {
      to: ['a@example.com', 'b@example.com'],
      template: 'plain',
      subject: 'Hi',
      text: 'hi',
    });
    expect(lines.map((l) => l.message).sort()).toEqual(['a@example.com: sent', 'b@example.com: sent']);
  });

  it('image: one line per variant', async () => {
    const bytes = await makeImage('png', 64, 48);
    const up = await env.app.request('/v1/files', {
      method: 'POST',
      headers: { authorization: `Bearer ${clientKey}`, 'content-type': 'image/png' },
      body: new Uint8Array(bytes),
    });
    const fileId = ((await up.json()) as { id: string }).id;
    const lines = await run('image', {
      file_id: fileId,
      variants: [
        { name: 'a', width: 32 },
        { name: 'b', width: 16 },
      ],
    });
    expect(lines.map((l) => l.message)).toEqual([
      expect.stringMatching(/^variant a: 32x24 webp, \d+ bytes$/),
      expect.stringMatching(/^variant b: 16x12 webp/),
    ]);
  });

  it('report: its row count', async () => {
    const lines = await run('report', { kind: 'jobs', format: 'csv' });
    expect(lines).toHaveLength(1);
    expect(lines[0].message).toMatch(/^jobs report: \d+ rows as csv$/);
  });

  it('recommendations: the strategy and the model age', async () => {
    await api('POST', '/v1/movies', {
      movies: [1, 2, 3, 4].map((i) => ({ id: `m${i}`, title: `Movie ${i}`, genres: ['Drama'] })),
    });
    await api('POST', '/v1/ratings', {
      ratings: [
        { user_id: 'u1', movie_id: 'm1', rating: 5 },
        { user_id: 'u2', movie_id: 'm1', rating: 4 },
        { user_id: 'u2', movie_id: 'm2', rating: 5 },
      ],
    });
    const lines = await run('recommendations', { user_id: 'u1' });
    expect(lines).toHaveLength(1);
    expect(lines[0].message).toMatch(/^scored 1 users with model v\d+$/);
    expect(lines[0].fields).toMatchObject({ strategies: expect.any(Object), model_age_ms: expect.any(Number) });
  });
});
