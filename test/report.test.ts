// Report jobs end to end: real ledger and catalog rows in PostgreSQL, the job run by in-process workers, the file
// read back from storage and parsed (csv-parse; poppler for the PDF).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findFile } from '../src/files/index.js';
import { PermanentError } from '../src/errors.js';
import { cursorRows } from '../src/jobs/report/cursor.js';
import { client, createTestEnv, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let a: Awaited<ReturnType<typeof tenantWithKeys>>;
let b: Awaited<ReturnType<typeof tenantWithKeys>>;
let apiA: ReturnType<typeof client>;
let opA: ReturnType<typeof client>;
let apiB: ReturnType<typeof client>;

const FROM = '2026-11-20T00:00:00.000Z';
const TO = '2026-11-21T00:00:00.000Z';
const at = (iso: string, plusMs = 0) => new Date(Date.parse(iso) + plusMs);
const EVIL = '=HYPERLINK("http://evil.example","click")';

/** What percentile_cont computes: linear interpolation between the closest ranks. */
function percentile(values: number[], p: number): number {
  const s = [...values].sort((x, y) => x - y);
  const pos = p * (s.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return Math.round(s[lo] + (s[hi] - s[lo]) * (pos - lo));
}

// Ten succeeded email jobs in tenant A: waits 100..1000 ms, run times 1..10 s.
const waits = Array.from({ length: 10 }, (_, i) => (i + 1) * 100);
const runs = Array.from({ length: 10 }, (_, i) => (i + 1) * 1000);

interface Seed {
  tenant: string;
  type: string;
  state: string;
  created: Date;
  waitMs?: number;
  runMs?: number;
  code?: string;
}

async function insertJobs(rows: Seed[]) {
  await env.db
    .insertInto('jobs')
    .values(
      rows.map((r) => {
        const started = r.waitMs === undefined ? null : new Date(r.created.getTime() + r.waitMs);
        const finished = started && r.runMs !== undefined ? new Date(started.getTime() + r.runMs) : null;
        return {
          id: uuidv7(),
          tenant: r.tenant,
          type: r.type,
          state: r.state as 'succeeded',
          priority: 'normal' as const,
          payload: '{}',
          max_attempts: 3,
          error: r.code ? JSON.stringify({ code: r.code, message: 'x' }) : null,
          created_at: r.created,
          updated_at: r.created,
          started_at: started,
          finished_at: finished,
        };
      }),
    )
    .execute();
}

beforeAll(async () => {
  env = await createTestEnv('report', { testJobs: false });
  [a, b] = await Promise.all([tenantWithKeys(env), tenantWithKeys(env)]);
  apiA = client(env.app, a.clientKey);
  opA = client(env.app, a.operatorKey);
  apiB = client(env.app, b.clientKey);

  const seeds: Seed[] = [];
  for (let i = 0; i < 10; i++)
    seeds.push({
      tenant: a.tenant,
      type: 'email',
      state: 'succeeded',
      created: at(FROM, i * 60_000),
      waitMs: waits[i],
      runMs: runs[i],
    });
  seeds.push({
    tenant: a.tenant,
    type: 'email',
    state: 'failed',
    created: at(FROM, 3600_000),
    waitMs: 50,
    runMs: 500,
    code: 'smtp_rejected',
  });
  seeds.push({
    tenant: a.tenant,
    type: 'email',
    state: 'failed',
    created: at(FROM, 3700_000),
    waitMs: 50,
    runMs: 700,
    code: 'smtp_rejected',
  });
  seeds.push({
    tenant: a.tenant,
    type: 'email',
    state: 'failed',
    created: at(FROM, 3800_000),
    waitMs: 50,
    runMs: 900,
    code: 'timeout',
  });
  seeds.push({ tenant: a.tenant, type: 'email', state: 'cancelled', created: at(FROM, 3900_000) });
  for (let i = 0; i < 3; i++)
    seeds.push({
      tenant: a.tenant,
      type: 'image',
      state: 'succeeded',
      created: at(FROM, 7200_000 + i),
      waitMs: 10,
      runMs: 200,
    });
  seeds.push({ tenant: a.tenant, type: 'image', state: 'queued', created: at(TO, -1) });
  // Outside the period: [from, to) excludes both.
  seeds.push({ tenant: a.tenant, type: 'email', state: 'succeeded', created: at(TO), waitMs: 1, runMs: 1 });
  seeds.push({ tenant: a.tenant, type: 'email', state: 'succeeded', created: at(FROM, -1), waitMs: 1, runMs: 1 });
  // Another tenant, inside the period.
  for (let i = 0; i < 5; i++)
    seeds.push({
      tenant: b.tenant,
      type: 'email',
      state: 'succeeded',
      created: at(FROM, 1000 + i),
      waitMs: 20_000,
      runMs: 60_000,
    });
  await insertJobs(seeds);

  const inPeriod = at(FROM, 5 * 3600_000);
  await env.db
    .insertInto('movies')
    .values([
      { tenant: a.tenant, id: 'm1', title: EVIL, genres: ['Drama'] },
      { tenant: a.tenant, id: 'm2', title: 'Calm Film', genres: ['Drama', 'Comedy'] },
      { tenant: a.tenant, id: 'm3', title: 'Laughs', genres: ['Comedy'] },
      { tenant: b.tenant, id: 'm1', title: 'Other Tenant Drama', genres: ['Drama'] },
    ])
    .execute();
  const rating = (tenant: string, user: string, movie: string, value: number, when = inPeriod) => ({
    tenant,
    user_id: user,
    movie_id: movie,
    rating: value,
    updated_at: when,
  });
  await env.db
    .insertInto('ratings')
    .values([
      rating(a.tenant, 'u1', 'm1', 5),
      rating(a.tenant, 'u2', 'm1', 4),
      rating(a.tenant, 'u3', 'm1', 3),
      rating(a.tenant, 'u4', 'm1', 4),
      rating(a.tenant, 'u1', 'm2', 2),
      rating(a.tenant, 'u2', 'm2', 3),
      rating(a.tenant, 'u1', 'm3', 5),
      // Rated before the period: not counted.
      rating(a.tenant, 'u5', 'm3', 1, at(FROM, -3600_000)),
      ...['u1', 'u2', 'u3', 'u4', 'u5', 'u6'].map((u) => rating(b.tenant, u, 'm1', 1)),
    ])
    .execute();

  await env.startWorkers(['report']);
});

afterAll(async () => {
  await env?.close();
});

async function runReport(api: ReturnType<typeof client>, payload: Record<string, unknown>) {
  const r = await api('POST', '/v1/jobs', { type: 'report', payload });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  const job = await waitFor(
    async () => {
      const j = await api('GET', `/v1/jobs/${r.body.id}`);
      return ['succeeded', 'failed'].includes(j.body.state) ? j.body : undefined;
    },
    { what: `report ${r.body.id}` },
  );
  expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
  return job;
}

async function fileBytes(fileId: string, tenant: string): Promise<Buffer> {
  const row = await findFile(env.db, fileId, tenant);
  expect(row, `file ${fileId} of ${tenant}`).toBeDefined();
  const chunks: Buffer[] = [];
  for await (const c of await env.storage.get(row!.storage_key)) chunks.push(c as Buffer);
  const bytes = Buffer.concat(chunks);
  expect(bytes.length).toBe(Number(row!.bytes));
  return bytes;
}

const csvRecords = (bytes: Buffer) =>
  parse(bytes, { columns: true, skip_empty_lines: true }) as Record<string, string>[];

describe('jobs report', () => {
  it('aggregates the tenant’s ledger over the period, in a CSV that parses back to the numbers', async () => {
    const job = await runReport(apiA, { kind: 'jobs', from: FROM, to: TO });
    expect(job.result).toMatchObject({ format: 'csv', rows: 5, from: FROM, to: TO, scope: 'tenant' });
    const bytes = await fileBytes(job.result.file_id, a.tenant);
    expect(job.result.bytes).toBe(bytes.length);
    const records = csvRecords(bytes);
    expect(records.map((r) => `${r.type}/${r.state}`)).toEqual([
      'email/succeeded',
      'email/failed',
      'email/cancelled',
      'image/queued',
      'image/succeeded',
    ]);
    const ok = records[0];
    expect(Number(ok.jobs)).toBe(10);
    expect(Number(ok.share_of_type_pct)).toBe(Math.round((1000 * 10) / 14) / 10);
    expect(Number(ok.type_success_rate_pct)).toBe(Math.round((1000 * 10) / 13) / 10);
    expect(Number(ok.run_p50_ms)).toBe(percentile(runs, 0.5));
    expect(Number(ok.run_p95_ms)).toBe(percentile(runs, 0.95));
    expect(Number(ok.wait_p50_ms)).toBe(percentile(waits, 0.5));
    expect(Number(ok.wait_p95_ms)).toBe(percentile(waits, 0.95));
    expect(ok.top_error_codes).toBe('');
    const failed = records[1];
    expect(Number(failed.jobs)).toBe(3);
    expect(failed.top_error_codes).toBe('smtp_rejected (2); timeout (1)');
    expect(Number(failed.run_p50_ms)).toBe(700);
    expect(records[2]).toMatchObject({ jobs: '1', run_p50_ms: '', wait_p50_ms: '' });
    expect(records[3]).toMatchObject({ jobs: '1', type_success_rate_pct: '100', wait_p50_ms: '' });
    expect(records[4]).toMatchObject({ jobs: '3', share_of_type_pct: '75', run_p95_ms: '200', wait_p50_ms: '10' });
  });

  it('does not count itself when its period covers its own creation', async () => {
    const until = new Date(Date.now() + 3_600_000).toISOString();
    const job = await runReport(apiB, { kind: 'jobs', from: FROM, to: until });
    const rows = csvRecords(await fileBytes(job.result.file_id, b.tenant));
    expect(rows.map((r) => `${r.type}/${r.state}/${r.jobs}`)).toEqual(['email/succeeded/5']);
  });

  it('keeps a client to its own tenant and lets an operator cover all tenants', async () => {
    const own = await runReport(apiB, { kind: 'jobs', from: FROM, to: TO });
    const onlyB = csvRecords(await fileBytes(own.result.file_id, b.tenant));
    expect(onlyB).toHaveLength(1);
    expect(onlyB[0]).toMatchObject({ type: 'email', state: 'succeeded', jobs: '5', run_p50_ms: '60000' });

    const refused = await apiA('POST', '/v1/jobs', { type: 'report', payload: { kind: 'jobs', scope: 'all' } });
    expect(refused.status).toBe(403);
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    const refusedBulk = await apiA('POST', '/v1/jobs/bulk', {
      jobs: [
        { type: 'report', payload: { kind: 'jobs' } },
        { type: 'report', payload: { kind: 'ratings', scope: 'all' } },
      ],
    });
    expect(refusedBulk.status).toBe(403);

    const all = await runReport(opA, { kind: 'jobs', from: FROM, to: TO, scope: 'all' });
    expect(all.result.scope).toBe('all');
    const rows = csvRecords(await fileBytes(all.result.file_id, a.tenant));
    expect(rows.find((r) => r.type === 'email' && r.state === 'succeeded')?.jobs).toBe('15');
  });

  it('writes a header-only CSV for an empty period, and refuses an inverted one at submission', async () => {
    const empty = await runReport(apiA, { kind: 'jobs', from: '2020-01-01T00:00:00Z', to: '2020-01-02T00:00:00Z' });
    expect(empty.result.rows).toBe(0);
    expect((await fileBytes(empty.result.file_id, a.tenant)).toString().trim()).toBe(
      'type,state,jobs,share_of_type_pct,type_success_rate_pct,run_p50_ms,run_p95_ms,wait_p50_ms,wait_p95_ms,top_error_codes',
    );
    // No period: the day before the job was created, fixed by the job so a rerun reports the same period.
    const daily = await runReport(apiA, { kind: 'jobs' });
    expect(daily.result.to).toBe(daily.created_at);
    expect(Date.parse(daily.result.to) - Date.parse(daily.result.from)).toBe(24 * 3600_000);
    const inverted = await apiA('POST', '/v1/jobs', { type: 'report', payload: { kind: 'jobs', from: TO, to: FROM } });
    expect(inverted.status).toBe(400);
    expect(inverted.body.errors[0].path).toBe('payload.to');
  });

  it('renders a PDF that opens, with the title, the period, a table and a chart', async () => {
    const job = await runReport(apiA, { kind: 'jobs', from: FROM, to: TO, format: 'pdf' });
    const bytes = await fileBytes(job.result.file_id, a.tenant);
    expect(bytes.subarray(0, 5).toString()).toBe('%PDF-');
    expect((await findFile(env.db, job.result.file_id))!.content_type).toBe('application/pdf');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'report-pdf-'));
    const file = path.join(dir, 'report.pdf');
    writeFileSync(file, bytes);
    const info = execFileSync('pdfinfo', [file]).toString();
    expect(Number(/Pages:\s+(\d+)/.exec(info)?.[1])).toBeLessThanOrEqual(2);
    expect(info).toMatch(/Title:\s+Jobs report/);
    const text = execFileSync('pdftotext', ['-layout', file, '-']).toString();
    expect(text).toContain('Jobs report');
    expect(text).toContain('Period: 2026-11-20 00:00 UTC to 2026-11-21 00:00 UTC');
    expect(text).toContain(`Tenant ${a.tenant}`);
    expect(text).toContain('Jobs per type');
    expect(text).toMatch(/smtp_rejected \(2\)/);
    expect(text).toMatch(/18 jobs: 13 succeeded, 3 failed, 1 cancelled; success rate 81\.3%/);
    execFileSync('pdftoppm', ['-png', '-r', '40', '-f', '1', '-l', '1', file, path.join(dir, 'page')]);
    const png = readdirSync(dir).find((f) => f.endsWith('.png'));
    expect(png).toBeDefined();
    expect(statSync(path.join(dir, png!)).size).toBeGreaterThan(1000);
  });
});

describe('ratings report', () => {
  it('counts ratings per genre for the tenant, with most-rated titles and formulas neutralised', async () => {
    const job = await runReport(apiA, { kind: 'ratings', from: FROM, to: TO });
    const records = csvRecords(await fileBytes(job.result.file_id, a.tenant));
    expect(records).toEqual([
      {
        genre: 'Drama',
        ratings: '6',
        movies_rated: '2',
        mean_rating: '3.5',
        most_rated_titles: `'${EVIL} (4); Calm Film (2)`,
      },
      {
        genre: 'Comedy',
        ratings: '3',
        movies_rated: '2',
        mean_rating: '3.333',
        most_rated_titles: 'Calm Film (2); Laughs (1)',
      },
    ]);
  });

  it('renders the ratings PDF', async () => {
    const job = await runReport(apiA, { kind: 'ratings', from: FROM, to: TO, format: 'pdf' });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'report-pdf-'));
    const file = path.join(dir, 'ratings.pdf');
    writeFileSync(file, await fileBytes(job.result.file_id, a.tenant));
    const text = execFileSync('pdftotext', ['-layout', file, '-']).toString();
    expect(text).toContain('Ratings report');
    expect(text).toContain('Ratings per genre');
    expect(text).toContain('Calm Film (2)');
    expect(text).not.toContain('Other Tenant Drama');
  });
});

describe('chaining and bounds', () => {
  it('asks for one report_ready email job, even when the report runs again', async () => {
    const job = await runReport(apiA, {
      kind: 'jobs',
      from: FROM,
      to: TO,
      notify: ['ops@example.com', 'lead@example.com'],
    });
    const emailId = job.result.notify_job_id;
    expect(emailId).toBeTruthy();
    const email = await env.db.selectFrom('jobs').selectAll().where('id', '=', emailId).executeTakeFirstOrThrow();
    expect(email).toMatchObject({ tenant: a.tenant, type: 'email' });
    expect(email.payload).toMatchObject({
      to: ['ops@example.com', 'lead@example.com'],
      template: 'report_ready',
      subject: 'Jobs report ready: 2026-11-20 00:00 UTC to 2026-11-21 00:00 UTC',
      data: { file_id: job.result.file_id, report: 'jobs CSV' },
    });

    // Run the same report job again (as after a crash): same file, still one email job.
    await env.db.updateTable('jobs').set({ state: 'failed' }).where('id', '=', job.id).execute();
    const retry = await apiA('POST', `/v1/jobs/${job.id}/retry`);
    expect(retry.status).toBe(202);
    const again = await waitFor(async () => {
      const j = await apiA('GET', `/v1/jobs/${job.id}`);
      return j.body.state === 'succeeded' ? j.body : undefined;
    });
    expect(again.result.file_id).toBe(job.result.file_id);
    expect(again.result.notify_job_id).toBe(emailId);
    const emails = await env.db
      .selectFrom('jobs')
      .select('id')
      .where('tenant', '=', a.tenant)
      .where('type', '=', 'email')
      .where(sql`payload->>'template'`, '=', 'report_ready')
      .execute();
    expect(emails).toHaveLength(1);
  });

  it('refuses a bad notify address at submission', async () => {
    const r = await apiA('POST', '/v1/jobs', { type: 'report', payload: { kind: 'jobs', notify: ['not an address'] } });
    expect(r.status).toBe(400);
  });

  it('ends a query that outlives the statement timeout with report_timeout, and cancels on abort', async () => {
    const slow = sql<{ x: number }>`select 1 as x from pg_sleep(5)`.compile(env.db);
    const started = Date.now();
    const timedOut = (async () => {
      for await (const _ of cursorRows(env.db, slow, { timeoutMs: 200 }));
    })();
    await expect(timedOut).rejects.toBeInstanceOf(PermanentError);
    await expect(timedOut).rejects.toMatchObject({ code: 'report_timeout' });
    expect(Date.now() - started).toBeLessThan(4_000);

    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('stop')), 300);
    const aborted = (async () => {
      for await (const _ of cursorRows(env.db, slow, { timeoutMs: 60_000, signal: controller.signal }));
    })();
    await expect(aborted).rejects.toThrow('stop');
    // The server-side statement was cancelled, not left running.
    const still = await sql<{
      n: number;
    }>`select count(*)::int as n from pg_stat_activity where query like '%pg_sleep(5)%' and state = 'active' and pid <> pg_backend_pid()`.execute(
      env.db,
    );
    expect(still.rows[0].n).toBe(0);
  });

  it('streams a result larger than one fetch batch, in order', async () => {
    const q = sql<{ g: number }>`select g from generate_series(1, 2500) g`.compile(env.db);
    let n = 0;
    for await (const row of cursorRows(env.db, q, { timeoutMs: 5_000, batchSize: 1000 })) expect(row.g).toBe(++n);
    expect(n).toBe(2500);
  });
});
