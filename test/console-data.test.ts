// The console's data functions against a real ledger: search, timeline (written by the jobs trigger), bounded job
// logs fenced on the generation, audit entries about a job.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant } from '../src/auth/keys.js';
import { jobAudit, recordAudit } from '../src/db/audit.js';
import { appendJobLogs, jobLogs } from '../src/db/job-logs.js';
import * as ledger from '../src/db/jobs.js';
import { idPrefixRange, searchJobs } from '../src/db/search.js';
import { jobTimeline } from '../src/db/timeline.js';
import { newId } from '../src/ids.js';
import type { ApiJob } from '../src/jobs/api-job.js';
import { createTestEnv, type TestEnv } from './helpers.js';

let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv('console-data');
  await createTenant(env.db, 'acme');
  await createTenant(env.db, 'globex');
});
afterAll(async () => env?.close());

async function job(tenant: string, payload: unknown, extra: Partial<ApiJob> = {}) {
  const [row] = await ledger.insertJobs(env.db, [
    {
      id: newId(),
      tenant,
      type: 'email',
      state: 'queued',
      priority: (extra.priority as 'low') ?? 'normal',
      payload: JSON.stringify(payload),
      max_attempts: 3,
      parent_id: extra.parent_id ?? null,
    },
  ]);
  return row;
}

describe('searchJobs', () => {
  it('finds a job by an email address inside its payload, newest first, scoped to a tenant or not', async () => {
    const a1 = await job('acme', { to: 'Jane.Doe@example.com', template: 'welcome' });
    await job('acme', { to: 'someone@example.org', template: 'welcome' });
    const a2 = await job('acme', { to: ['x@example.net', 'jane.doe@example.com'], template: 'plain' });
    const g1 = await job('globex', { to: 'jane.doe@example.com', template: 'welcome' });
    const acme = await searchJobs(env.db, { tenant: 'acme', q: 'jane.doe@example.com', limit: 10 });
    expect(acme.map((r) => r.id)).toEqual([a2.id, a1.id]);
    const all = await searchJobs(env.db, { q: 'jane.doe@EXAMPLE.com', limit: 10 });
    expect(all.map((r) => r.id)).toEqual([g1.id, a2.id, a1.id]);
    const paged = await searchJobs(env.db, { q: 'jane.doe@example.com', before: a2.id, limit: 10 });
    expect(paged.map((r) => r.id)).toEqual([a1.id]);
  });

  it('takes LIKE wildcards in q literally', async () => {
    await job('acme', { note: 'percent_sign' });
    expect(await searchJobs(env.db, { tenant: 'acme', q: 'percent%sign', limit: 10 })).toEqual([]);
    expect(await searchJobs(env.db, { tenant: 'acme', q: 'nt_si', limit: 10 })).toHaveLength(1);
  });

  it('finds a job by an id prefix, and by its error code, result text and parent', async () => {
    const parent = await job('globex', { user_id: 'u-77' });
    const child = await job('globex', { user_id: 'u-78' }, { parent_id: parent.id });
    const byPrefix = await searchJobs(env.db, { q: parent.id.slice(0, 13), limit: 50 });
    expect(byPrefix.map((r) => r.id)).toContain(parent.id);
    expect(await searchJobs(env.db, { parent_id: parent.id, limit: 10 })).toMatchObject([{ id: child.id }]);
    await ledger.markRunningMany(env.db, [{ id: child.id, gen: 0 }]);
    await ledger.failRun(
      env.db,
      { id: child.id, gen: 0 },
      { code: 'smtp_rejected', message: 'mailbox full at mx.globex.test' },
      true,
    );
    expect(await searchJobs(env.db, { error_code: 'smtp_rejected', limit: 10 })).toMatchObject([{ id: child.id }]);
    expect(await searchJobs(env.db, { q: 'mx.globex.test', limit: 10 })).toMatchObject([{ id: child.id }]);
    expect(await searchJobs(env.db, { q: 'mx.globex.test', tenant: 'acme', limit: 10 })).toEqual([]);
  });

  it('reads an id prefix as the range of ids it starts', () => {
    expect(idPrefixRange('0193ab')).toEqual([
      '0193ab00-0000-0000-0000-000000000000',
      '0193abff-ffff-ffff-ffff-ffffffffffff',
    ]);
    expect(idPrefixRange('jane')).toBeUndefined();
    expect(idPrefixRange('abc')).toBeUndefined();
  });
});

describe('jobTimeline', () => {
  it('records each start, the failed attempt with its error, and a retry under a new generation', async () => {
    const row = await job('acme', { to: 'tl@example.com' });
    await ledger.markRunningMany(env.db, [{ id: row.id, gen: 0 }]);
    await ledger.failRun(env.db, { id: row.id, gen: 0 }, { code: 'smtp_timeout', message: 'no answer' }, false);
    await ledger.markRunningMany(env.db, [{ id: row.id, gen: 0 }]);
    await ledger.failRun(env.db, { id: row.id, gen: 0 }, { code: 'smtp_timeout', message: 'no answer' }, true);
    // A retry queues the job again as a new generation, in the same statement.
    await ledger.resetForRetry(env.db, [{ id: row.id, generation: 0 }]);
    await ledger.markRunningAndSucceededMany(env.db, [{ id: row.id, gen: 1 }], []);
    await ledger.markSucceededMany(env.db, [{ id: row.id, gen: 1, result: { ok: true } }]);
    const t = await jobTimeline(env.db, row.id);
    expect(t!.events.map((e) => `${e.from}>${e.to}@${e.generation}/${e.attempt}`)).toEqual([
      'queued>running@0/1',
      'running>delayed@0/1',
      'delayed>running@0/2',
      'running>failed@0/2',
      'failed>queued@1/0',
      'queued>running@1/1',
      'running>succeeded@1/1',
    ]);
    expect(t!.attempts.map((a) => [a.generation, a.attempt, a.outcome, a.error?.code ?? null])).toEqual([
      [0, 1, 'delayed', 'smtp_timeout'],
      [0, 2, 'failed', 'smtp_timeout'],
      [1, 1, 'succeeded', null],
    ]);
    // The process that started each run: this one (its connections' application_name).
    expect(t!.attempts[0].process).toBe(`${(await import('node:os')).hostname()}:${process.pid}`.slice(0, 63));
    expect(await jobTimeline(env.db, newId())).toBeUndefined();
  });

  it('writes nothing for progress', async () => {
    const row = await job('acme', { n: 1 });
    await ledger.markRunningMany(env.db, [{ id: row.id, gen: 0 }]);
    await ledger.setProgress(env.db, { id: row.id, gen: 0 }, 50);
    await ledger.setProgress(env.db, { id: row.id, gen: 0 }, 60);
    expect((await jobTimeline(env.db, row.id))!.events).toHaveLength(1);
  });
});

describe('job logs', () => {
  it('keeps lines in order, bounded in count with a closing line saying so, across batches', async () => {
    const row = await job('acme', { n: 2 });
    const line = (i: number) => ({ job_id: row.id, gen: 0, at: new Date(), message: `line ${i}`, fields: { i } });
    const limits = { lines: 10, bytes: 100_000 };
    expect(await appendJobLogs(env.db, [0, 1, 2, 3].map(line), limits)).toBe(4);
    expect(await appendJobLogs(env.db, [4, 5, 6, 7, 8, 9, 10, 11].map(line), limits)).toBe(6);
    expect(await appendJobLogs(env.db, [12].map(line), limits)).toBe(0);
    const logs = await jobLogs(env.db, row.id);
    expect(logs.truncated).toBe(true);
    expect(logs.items.map((l) => l.message)).toEqual([
      ...[0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => `line ${i}`),
      'job log limit reached (10 lines or 100000 bytes per job): later lines are dropped',
    ]);
    expect(logs.items[3].fields).toEqual({ i: 3 });
  });

  it('bounds bytes, and keeps nothing of a run that is not the current generation', async () => {
    const row = await job('acme', { n: 3 });
    const big = 'x'.repeat(900);
    const lines = [0, 1, 2, 3].map((i) => ({ job_id: row.id, gen: 0, at: new Date(), message: `${i}${big}` }));
    const other = await job('acme', { n: 4 });
    const stale = { job_id: other.id, gen: 7, at: new Date(), message: 'from an old run' };
    expect(await appendJobLogs(env.db, [...lines, stale], { lines: 100, bytes: 2_500 })).toBe(3);
    const logs = await jobLogs(env.db, row.id);
    expect(logs.items.map((l) => l.message[0])).toEqual(['0', '1', 'j']);
    expect((await jobLogs(env.db, other.id)).items).toEqual([]);
  });
});

describe('jobAudit', () => {
  it('lists the entries about one job with from where, newest first', async () => {
    const row = await job('acme', { n: 5 });
    await recordAudit(env.db, {
      actor: undefined,
      action: 'job.cancel',
      target_kind: 'job',
      target: row.id,
      surface: 'api',
      client_addr: '10.0.0.9',
    });
    await recordAudit(env.db, {
      actor: undefined,
      action: 'job.retry',
      target_kind: 'job',
      target: row.id,
      surface: 'console',
    });
    await recordAudit(env.db, { actor: undefined, action: 'queue.pause', target_kind: 'queue', target: 'email' });
    const rows = await jobAudit(env.db, row.id);
    expect(rows.map((r) => [r.action, r.surface, r.client_addr])).toEqual([
      ['job.retry', 'console', null],
      ['job.cancel', 'api', '10.0.0.9'],
    ]);
  });
});
