// The report PDF's layout, read back with poppler (pdfinfo, pdftotext) as a person would see it: whatever the number of
// rows and bars, no page holds only the closing notes. Rendered with pdfkit into real files; no database needed.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CHART_BARS, createPdf, renderPdf, TABLE_ROWS } from '../src/jobs/report/pdf.js';
import { jobsReport, type JobsReportRow } from '../src/jobs/report/queries.js';
import { ROOT, uniqueName } from './helpers.js';

const dir = path.join(ROOT, 'var/test', uniqueName('report_pdf'));

async function render(rows: number, bars: number, totalRows = rows): Promise<string> {
  const data: JobsReportRow[] = Array.from({ length: rows }, (_, i) => ({
    type: `type${String(i).padStart(2, '0')}`,
    state: 'succeeded',
    jobs: 1000 + i,
    share_of_type_pct: 100,
    type_success_rate_pct: 99.5,
    run_p50_ms: 340,
    run_p95_ms: 4200,
    wait_p50_ms: 12,
    wait_p95_ms: 95,
    top_error_codes: i % 3 ? null : 'smtp_rejected (3); timeout (1)',
  }));
  const doc = createPdf('Jobs report');
  const chunks: Buffer[] = [];
  doc.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise((r) => doc.on('end', r));
  renderPdf(doc, {
    title: 'Jobs report',
    scopeLabel: 'Tenant acme',
    from: new Date('2026-11-30T00:00:00Z'),
    to: new Date('2026-12-01T00:00:00Z'),
    generatedAt: new Date('2026-12-01T00:05:00Z'),
    summary: `${totalRows} rows`,
    chartTitle: 'Jobs per type',
    chart: Array.from({ length: bars }, (_, i) => [`type${i}`, 100 - i]),
    columns: jobsReport.pdf.columns,
    footnote: jobsReport.pdf.footnote,
    rows: data,
    totalRows,
  });
  await ended;
  const file = path.join(dir, `r${rows}-b${bars}-t${totalRows}.pdf`);
  writeFileSync(file, Buffer.concat(chunks));
  return file;
}

function pages(file: string): string[] {
  const n = Number(/Pages:\s+(\d+)/.exec(execFileSync('pdfinfo', [file]).toString())![1]);
  return Array.from({ length: n }, (_, i) =>
    execFileSync('pdftotext', ['-layout', '-f', String(i + 1), '-l', String(i + 1), file, '-']).toString(),
  );
}

describe('report PDF layout', () => {
  it('never leaves the closing notes alone on a page, for every table length and chart size', async () => {
    mkdirSync(dir, { recursive: true });
    const lonely: string[] = [];
    const pageCounts = new Set<number>();
    // Short tables, and the long ones around where the table reaches the bottom of the first page.
    const lengths = [1, ...Array.from({ length: 8 }, (_, i) => TABLE_ROWS - 7 + i)];
    for (const bars of [CHART_BARS]) {
      for (const rows of lengths) {
        for (const totalRows of rows === TABLE_ROWS ? [rows, rows + 7] : [rows]) {
          const file = await render(rows, bars, totalRows);
          const text = pages(file);
          pageCounts.add(text.length);
          text.forEach((page, i) => {
            // A page must show part of the report itself (its title or a table row), not only the notes.
            if (!/Jobs report|type\d\d/.test(page)) lonely.push(`${path.basename(file)} page ${i + 1}`);
          });
        }
      }
    }
    expect(lonely).toEqual([]);
    // The sweep reached two-page reports, where the notes could be pushed over.
    expect([...pageCounts].sort()).toEqual([1, 2]);
  }, 180_000);
});
