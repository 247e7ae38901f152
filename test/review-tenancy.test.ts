// Issue 17, items 3, 4, 7 and 15: what one tenant's client key can reach and break. Real PostgreSQL and Redis, the
// app in process, report jobs run by in-process workers.
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createKey } from '../src/auth/keys.js';
import { groupSubmitter } from '../src/jobs/submit.js';
import { client, createTestEnv, silentLog, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let a: Awaited<ReturnType<typeof tenantWithKeys>>;
let b: Awaited<ReturnType<typeof tenantWithKeys>>;
let clientA: ReturnType<typeof client>;
let opA: ReturnType<typeof client>;
let clientB: ReturnType<typeof client>;
let viewerB: ReturnType<typeof client>;

beforeAll(async () => {
  env = await createTestEnv('review_tenancy', { env: { TENANT_MAX_IN_FLIGHT: '0' } });
  a = await tenantWithKeys(env);
  b = await tenantWithKeys(env);
  clientA = client(env.app, a.clientKey);
  opA = client(env.app, a.operatorKey);
  clientB = client(env.app, b.clientKey);
  viewerB = client(env.app, (await createKey(env.db, env.config.API_KEY_SECRET, b.tenant, 'viewer')).key);
  await env.startWorkers(['report']);
});

afterAll(async () => {
  await env?.close();
});

afterEach(() => {
  vi.useRealTimers();
});

async function ended(api: ReturnType<typeof client>, id: string) {
  return waitFor(
    async () => {
      const j = await api('GET', `/v1/jobs/${id}`);
      return ['succeeded', 'failed'].includes(j.body.state) ? j.body : undefined;
    },
    { what: `job ${id} to end` },
  );
}

describe('all-tenant report data readable by client keys (item 3)', () => {
  it('an all-tenant report’s file is readable by operators and viewers only, not by its tenant’s client keys', async () => {
    const r = await opA('POST', '/v1/jobs', { type: 'report', payload: { kind: 'jobs', scope: 'all' } });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const job = await ended(opA, r.body.id);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    const file = `/v1/files/${job.result.file_id}`;

    // The submitting tenant's own client key: as if there were no such file.
    const refused = await clientA('GET', file);
    expect(refused.status).toBe(404);
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    expect((await clientB('GET', file)).status).toBe(404);
    expect((await opA('GET', file)).status).toBe(200);
    // A viewer of another tenant reads what operators read.
    expect((await viewerB('GET', file)).status).toBe(200);

    // A report of the tenant's own figures stays readable by its client keys.
    const own = await ended(
      opA,
      (await opA('POST', '/v1/jobs', { type: 'report', payload: { kind: 'jobs' } })).body.id,
    );
    expect((await clientA('GET', `/v1/files/${own.result.file_id}`)).status).toBe(200);
  });

  it('a client key cannot re-run an all-tenant report through retry: 403, as at submission', async () => {
    const r = await opA('POST', '/v1/jobs', { type: 'report', payload: { kind: 'ratings', scope: 'all' } });
    const job = await ended(opA, r.body.id);
    await env.db.updateTable('jobs').set({ state: 'failed' }).where('id', '=', job.id).execute();

    const refused = await clientA('POST', `/v1/jobs/${job.id}/retry`);
    expect(refused.status).toBe(403);
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    const row = await env.db.selectFrom('jobs').select('state').where('id', '=', job.id).executeTakeFirstOrThrow();
    expect(row.state).toBe('failed');
    // An operator still may.
    expect((await opA('POST', `/v1/jobs/${job.id}/retry`)).status).toBe(202);
    expect((await ended(opA, job.id)).state).toBe('succeeded');
  });
});

describe('one tenant’s bad payload fails other tenants’ submissions (item 4)', () => {
  it('a NUL in one payload is refused at validation, and concurrent submissions of another tenant are accepted', async () => {
    const replies = await Promise.all([
      clientA('POST', '/v1/jobs', { type: 'test', payload: { value: { note: 'x\u0000y' } } }),
      ...Array.from({ length: 6 }, (_, i) => clientB('POST', '/v1/jobs', { type: 'test', payload: { value: i } })),
    ]);
    expect(replies[0].status).toBe(400);
    expect(replies[0].body.errors).toEqual([
      { path: 'payload.value.note', message: 'must not contain the NUL character (\\u0000)' },
    ]);
    expect(replies.slice(1).map((r) => r.status)).toEqual([202, 202, 202, 202, 202, 202]);
  });

  it('the submit group commit writes a row the database refuses alone, failing only its own caller', async () => {
    const submitOne = groupSubmitter({ db: env.db, queues: env.queues, registry: env.registry, log: silentLog });
    const row = (payload: string) => ({
      type: 'test',
      state: 'queued' as const,
      priority: 'normal' as const,
      payload,
      max_attempts: 1,
      callback_url: null,
      run_at: null,
    });
    // Past validation (a caller that forgot it): jsonb cannot hold \u0000 (22P05).
    const results = await Promise.allSettled([
      submitOne(b.tenant, row('{"value":1}')),
      submitOne(a.tenant, row('{"value":"\\u0000"}')),
      submitOne(b.tenant, row('{"value":3}')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason.code).toBe('22P05');
  });
});

describe('client Idempotency-Keys share a namespace with internal ones (item 7)', () => {
  it('a client’s key `report_ready:<job>` cannot pre-empt the report’s own notification', async () => {
    const runAt = new Date(Date.now() + 1_500).toISOString();
    const report = await clientA('POST', '/v1/jobs', {
      type: 'report',
      payload: { kind: 'jobs', notify: ['ops@example.com'] },
      run_at: runAt,
    });
    expect(report.status).toBe(202);
    const key = `report_ready:${report.body.id}`;
    const email = {
      type: 'email',
      payload: { to: 'someone@example.com', template: 'plain', subject: 'hi', text: 'hi' },
    };
    const squat = await clientA('POST', '/v1/jobs', email, { 'idempotency-key': key });
    expect(squat.status, JSON.stringify(squat.body)).toBe(202);
    // The client's key still names the client's job.
    const again = await clientA('POST', '/v1/jobs', email, { 'idempotency-key': key });
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(squat.body.id);

    const done = await ended(clientA, report.body.id);
    expect(done.state).toBe('succeeded');
    expect(done.result.notify_job_id).not.toBe(squat.body.id);
    const notify = (await clientA('GET', `/v1/jobs/${done.result.notify_job_id}`)).body;
    expect(notify.payload).toMatchObject({ template: 'report_ready', to: ['ops@example.com'] });
  });
});

describe('idempotency expiry compares the app clock with the database’s now() (item 15)', () => {
  const submitWithKey = (key: string, value: number) =>
    clientB('POST', '/v1/jobs', { type: 'test', payload: { value } }, { 'idempotency-key': key });

  it('a key 23 h 50 min old by the database answers its first job, though the app’s clock runs 20 min ahead', async () => {
    const first = await submitWithKey('clock-ahead', 1);
    expect(first.status).toBe(202);
    await env.db
      .updateTable('jobs')
      .set({ created_at: sql<Date>`now() - interval '23 hours 50 minutes'` })
      .where('id', '=', first.body.id)
      .execute();
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 20 * 60_000 });
    const repeat = await submitWithKey('clock-ahead', 1);
    expect(repeat.status).toBe(200);
    expect(repeat.body.id).toBe(first.body.id);
  });

  it('a key 24 h 10 min old by the database is free again, though the app’s clock runs 20 min behind', async () => {
    const first = await submitWithKey('clock-behind', 1);
    await env.db
      .updateTable('jobs')
      .set({ created_at: sql<Date>`now() - interval '24 hours 10 minutes'` })
      .where('id', '=', first.body.id)
      .execute();
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() - 20 * 60_000 });
    const repeat = await submitWithKey('clock-behind', 2);
    expect(repeat.status).toBe(202);
    expect(repeat.body.id).not.toBe(first.body.id);
  });
});
