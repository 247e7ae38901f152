// A report run: rows from a cursor → CSV or PDF → one stored file → optionally a `report_ready` email job.
import { pipeline, Readable } from 'node:stream';
import { stringify } from 'csv-stringify';
import * as ledger from '../../db/jobs.js';
import type { FileRow } from '../../db/types.js';
import { saveFile } from '../../files/index.js';
import { requestHash, submit } from '../submit.js';
import { PermanentError } from '../../errors.js';
import type { JobContext } from '../types.js';
import { cursorRows } from './cursor.js';
import { createPdf, formatTime, renderPdf, TABLE_ROWS } from './pdf.js';
import { jobsReport, ratingsReport, type ReportKind, type ReportScope } from './queries.js';

export interface ReportRequest {
  kind: 'jobs' | 'ratings';
  from?: string;
  to?: string;
  format: 'csv' | 'pdf';
  scope: 'tenant' | 'all';
  notify?: string[];
}

export interface ReportResult {
  file_id: string;
  format: 'csv' | 'pdf';
  rows: number;
  bytes: number;
  from: string;
  to: string;
  scope: 'tenant' | 'all';
  /** The follow-up `email` job, when the payload asked for `notify`. */
  notify_job_id?: string;
}

const DAY_MS = 24 * 3600 * 1000;
/**
 * The output's name within the job, `jobs-2026-12-01`: the kind and the last day of the period. The period is fixed
 * by the job, so a rerun overwrites the same file id; downloads are named after it (with the format's extension).
 */
function fileName(kind: string, to: Date): string {
  return `${kind}-${to.toISOString().slice(0, 10)}`;
}

/**
 * The period is fixed by the job, not by the clock of the run: `to` defaults to when the job was created and
 * `from` to a day before `to`, so a rerun (or a retry hours later) reports the same period.
 */
async function resolvePeriod(ctx: JobContext<ReportRequest>): Promise<{ from: Date; to: Date }> {
  const { from, to } = ctx.payload;
  let end = to ? new Date(to) : undefined;
  if (!end) {
    const row = await ledger.findJob(ctx.deps.db, ctx.id);
    end = row?.created_at ?? new Date();
  }
  const start = from ? new Date(from) : new Date(end.getTime() - DAY_MS);
  if (start >= end)
    throw new PermanentError(
      'invalid_period',
      `the period is empty: from ${start.toISOString()} is not before to ${end.toISOString()}`,
    );
  return { from: start, to: end };
}

export async function runReport(ctx: JobContext<ReportRequest>): Promise<ReportResult> {
  const p = ctx.payload;
  const period = await resolvePeriod(ctx);
  const scope: ReportScope = { ...period, tenant: p.scope === 'all' ? undefined : ctx.tenant, reportJob: ctx.id };
  await ctx.progress(5);
  const name = fileName(p.kind, period.to);
  const out =
    p.kind === 'jobs' ? await generate(ctx, jobsReport, scope, name) : await generate(ctx, ratingsReport, scope, name);
  await ctx.progress(90);
  ctx.jobLog(`${p.kind} report: ${out.rows} rows as ${p.format}`, { rows: out.rows, file_id: out.file.id, ...period });
  const result: ReportResult = {
    file_id: out.file.id,
    format: p.format,
    rows: out.rows,
    bytes: Number(out.file.bytes),
    from: period.from.toISOString(),
    to: period.to.toISOString(),
    scope: p.scope,
  };
  if (p.notify?.length) result.notify_job_id = await notify(ctx, p.notify, out.title, result);
  return result;
}

async function generate<R>(
  ctx: JobContext<ReportRequest>,
  kind: ReportKind<R>,
  scope: ReportScope,
  name: string,
): Promise<{ file: FileRow; rows: number; title: string }> {
  const { db, storage, config } = ctx.deps;
  const rows = cursorRows(db, kind.query(db, scope), {
    timeoutMs: config.REPORT_STATEMENT_TIMEOUT_MS,
    signal: ctx.signal,
  });
  // Every tenant's figures are for operators (and viewers) only, not for the submitting tenant's client keys.
  const visibility = scope.tenant === undefined ? ('operators' as const) : ('tenant' as const);
  const target = { tenant: ctx.tenant, jobId: ctx.id, name, visibility };
  const title = kind.title;

  if (ctx.payload.format === 'csv') {
    let count = 0;
    const counted = async function* () {
      for await (const row of rows) {
        count++;
        yield row;
      }
    };
    const csv = stringify({
      header: true,
      columns: kind.columns,
      escape_formulas: true,
      cast: { date: (d) => d.toISOString() },
    });
    // A failing query destroys the CSV stream, which fails the storage write (and leaves no partial file).
    pipeline(Readable.from(counted()), csv, () => {});
    const file = await saveFile(db, storage, { ...target, body: csv, contentType: 'text/csv; charset=utf-8' });
    return { file, rows: count, title };
  }

  // The PDF shows a chart of the whole result and the first rows: both are gathered in bounded memory.
  const chart = new Map<string, number>();
  const totals = new Map<string, number>();
  const add = (key: string, n: number) => totals.set(key, (totals.get(key) ?? 0) + n);
  const first: R[] = [];
  let count = 0;
  for await (const row of rows) {
    count++;
    const label = kind.pdf.chart.label(row);
    chart.set(label, (chart.get(label) ?? 0) + kind.pdf.chart.value(row));
    kind.pdf.totals(row, add);
    if (first.length < TABLE_ROWS) first.push(row);
  }
  const doc = createPdf(title);
  const saving = saveFile(db, storage, { ...target, body: doc, contentType: 'application/pdf' });
  try {
    renderPdf(doc, {
      title,
      scopeLabel: scope.tenant === undefined ? 'All tenants' : `Tenant ${scope.tenant}`,
      from: scope.from,
      to: scope.to,
      generatedAt: new Date(),
      summary: kind.pdf.summary(totals),
      chartTitle: kind.pdf.chart.title,
      chart: [...chart].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])),
      columns: kind.pdf.columns,
      footnote: kind.pdf.footnote,
      rows: first,
      totalRows: count,
    });
  } catch (err) {
    doc.destroy(err as Error);
    await saving.catch(() => {});
    throw err;
  }
  return { file: await saving, rows: count, title };
}

/**
 * Submits the `report_ready` email as an ordinary ledger job. Its idempotency key is derived from this job,
 * so a report that runs twice (a worker died after this point) still asks for one email.
 */
async function notify(ctx: JobContext<ReportRequest>, to: string[], title: string, r: ReportResult): Promise<string> {
  const { db, queues, registry, log, config } = ctx.deps;
  const key = `report_ready:${ctx.id}`;
  const earlier = await ledger.findByIdempotencyKey(db, ctx.tenant, key);
  if (earlier) return earlier.id;
  const email = registry.get('email');
  if (!email) throw new PermanentError('email_unavailable', 'this platform has no email job type to send report_ready');
  const period = `${formatTime(new Date(r.from))} to ${formatTime(new Date(r.to))}`;
  // `data` keeps to the report_ready template's variables (src/jobs/email/render.ts); the period goes in subject and note.
  const payload = email.payload.parse({
    to,
    template: 'report_ready',
    subject: `${title} ready: ${period}`,
    text: `${title}, ${r.scope === 'all' ? 'all tenants' : `tenant ${ctx.tenant}`}, ${period}: ${r.rows} rows, ${r.format.toUpperCase()}, ${r.bytes} bytes.`,
    data: {
      file_id: r.file_id,
      report: `${ctx.payload.kind} ${r.format.toUpperCase()}`,
      ...(config.PUBLIC_URL ? { url: new URL(`/v1/files/${r.file_id}`, config.PUBLIC_URL).toString() } : {}),
    },
  });
  const row = {
    type: 'email',
    state: 'queued' as const,
    priority: 'normal' as const,
    payload: JSON.stringify(payload),
    max_attempts: email.attempts,
    callback_url: null,
    run_at: null,
  };
  try {
    const [job] = await submit({ db, queues, registry, log }, ctx.tenant, [row], {
      idempotency_key: key,
      request_hash: requestHash(payload),
    });
    return job.id;
  } catch (err) {
    // A concurrent run of this report won the insert.
    if ((err as { code?: string }).code !== '23505') throw err;
    const raced = await ledger.findByIdempotencyKey(db, ctx.tenant, key);
    if (!raced) throw err;
    return raced.id;
  }
}
