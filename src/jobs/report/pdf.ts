// A one- or two-page PDF someone would forward: title, period, a summary line, a bar chart and the table.
import PDFDocument from 'pdfkit';
import type { PdfColumn } from './queries.js';

export interface PdfReport<R> {
  title: string;
  /** "Tenant acme" or "All tenants". */
  scopeLabel: string;
  from: Date;
  to: Date;
  generatedAt: Date;
  summary: string;
  chartTitle: string;
  /** Largest first; only the first CHART_BARS are drawn. */
  chart: [label: string, value: number][];
  columns: PdfColumn<R>[];
  footnote: string;
  /** The first TABLE_ROWS rows, in report order. */
  rows: R[];
  totalRows: number;
}

export const CHART_BARS = 12;
export const TABLE_ROWS = 30;

const INK = '#222222';
const MUTED = '#666666';
const BAR = '#3b6ea5';

/** "2026-11-21 00:00 UTC": minutes unless the time has seconds. */
export function formatTime(d: Date): string {
  const iso = d
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d{3}Z$/, '');
  return `${iso.endsWith(':00') ? iso.slice(0, -3) : iso} UTC`;
}

// The standard PDF fonts speak WinAnsi only; anything else would print as garbage, so it prints as '?'.
const printable = (s: string) =>
  s.replace(/[^\x20-\x7e\u00a0-\u00ff\u2013\u2014\u2018\u2019\u201c\u201d\u2022\u2026\u20ac]/g, '?');

export function createPdf(title: string): PDFKit.PDFDocument {
  return new PDFDocument({
    size: 'A4',
    margin: 48,
    bufferPages: false,
    info: { Title: title, Author: 'movie-jobs', Creator: 'movie-jobs report job' },
  });
}

/** Draws the report into `doc` and ends it; `doc` is a Readable of the PDF bytes. */
export function renderPdf<R>(doc: PDFKit.PDFDocument, r: PdfReport<R>): void {
  const left = doc.page.margins.left;
  const width = doc.page.width - left - doc.page.margins.right;

  doc.font('Helvetica-Bold').fontSize(20).fillColor(INK).text(printable(r.title), left, doc.page.margins.top);
  doc.moveDown(0.2);
  doc
    .font('Helvetica')
    .fontSize(11)
    .fillColor(INK)
    .text(`Period: ${formatTime(r.from)} to ${formatTime(r.to)}`);
  doc
    .fontSize(9)
    .fillColor(MUTED)
    .text(`${printable(r.scopeLabel)} · generated ${formatTime(r.generatedAt)}`);
  doc.moveDown(0.6);
  doc.fontSize(10).fillColor(INK).text(printable(r.summary), { width });
  doc.moveDown(1);

  drawBarChart(doc, r.chartTitle, r.chart.slice(0, CHART_BARS), left, width);

  doc.font('Helvetica-Bold').fontSize(12).fillColor(INK).text('Details', left, doc.y);
  doc.moveDown(0.3);
  if (r.rows.length === 0) {
    doc.font('Helvetica').fontSize(10).fillColor(MUTED).text('Nothing happened in this period.');
  } else {
    // The notes go above the table, as its legend: below it they would be pushed alone onto a new page whenever the
    // table ends near the bottom of one.
    if (r.totalRows > r.rows.length) {
      doc
        .font('Helvetica')
        .fontSize(8)
        .fillColor(MUTED)
        .text(
          `Showing the first ${r.rows.length} of ${r.totalRows} rows; the CSV format of this report has them all.`,
          left,
          doc.y,
          { width },
        );
    }
    doc.font('Helvetica').fontSize(8).fillColor(MUTED).text(printable(r.footnote), left, doc.y, { width });
    doc.moveDown(0.5);
    const header = r.columns.map((c) => ({
      text: c.header,
      font: { src: 'Helvetica-Bold' },
      backgroundColor: '#e8edf3',
    }));
    const body = r.rows.map((row) => r.columns.map((c) => printable(c.text(row))));
    doc.font('Helvetica').fontSize(8).fillColor(INK);
    doc.table({
      columnStyles: r.columns.map((c) => ({ width: c.width, align: { x: c.align ?? 'left', y: 'top' } })),
      defaultStyle: { border: 0.5, borderColor: '#b8c2cc', padding: [2, 3, 2, 3] },
      data: [header, ...body],
    });
  }
  doc.end();
}

function drawBarChart(doc: PDFKit.PDFDocument, title: string, bars: [string, number][], left: number, width: number) {
  doc.font('Helvetica-Bold').fontSize(12).fillColor(INK).text(title, left, doc.y);
  doc.moveDown(0.4);
  if (bars.length === 0) {
    doc.font('Helvetica').fontSize(10).fillColor(MUTED).text('No data in this period.');
    doc.moveDown(1);
    return;
  }
  const labelWidth = 120;
  const valueWidth = 60;
  const barLeft = left + labelWidth + 8;
  const barMax = width - labelWidth - 8 - valueWidth;
  const max = Math.max(...bars.map(([, v]) => v), 1);
  const rowHeight = 16;
  const top = doc.y;
  let y = top;
  doc.font('Helvetica').fontSize(9);
  for (const [label, value] of bars) {
    const w = Math.max(1, (value / max) * barMax);
    doc
      .fillColor(INK)
      .text(printable(label), left, y + 2, { width: labelWidth, align: 'right', lineBreak: false, ellipsis: true });
    doc.rect(barLeft, y, w, rowHeight - 4).fill(BAR);
    doc
      .fillColor(INK)
      .text(value.toLocaleString('en-US'), barLeft + w + 4, y + 2, { width: valueWidth, lineBreak: false });
    y += rowHeight;
  }
  doc
    .moveTo(barLeft, top - 2)
    .lineTo(barLeft, y)
    .strokeColor('#999999')
    .lineWidth(0.5)
    .stroke();
  doc.x = left;
  doc.y = y + 14;
}
