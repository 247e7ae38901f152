// The benchmark chart: each ratio against its anchor, as a PNG.
import sharp from 'sharp';
import type { Row } from './core.js';

/** Renders the chart. The image scenario blocks libvips's SVG loader for the whole process; our own SVG is trusted. */
export async function renderChart(rows: Row[], file: string): Promise<void> {
  sharp.unblock({ operation: ['VipsForeignLoadSvgBuffer'] });
  await sharp(Buffer.from(svg(rows)))
    .png()
    .toFile(file);
}

/** A bar chart of each ratio against its anchor (1.0 = as fast as the bare tool). */
function svg(rs: Row[]): string {
  const withRatio = rs.filter((r) => r.ratio !== null);
  const w = 900;
  const barH = 26;
  const h = 60 + withRatio.length * (barH + 10);
  const x0 = 330;
  const scale = (w - x0 - 60) / Math.max(1.2, ...withRatio.map((r) => r.ratio!));
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const bars = withRatio
    .map((r, i) => {
      const y = 40 + i * (barH + 10);
      const color = r.ok === false ? '#d9534f' : '#2e7d32';
      return `<text x="${x0 - 10}" y="${y + 18}" text-anchor="end" font-size="13">${esc(r.scenario)}</text>
<rect x="${x0}" y="${y}" width="${Math.max(1, r.ratio! * scale)}" height="${barH}" fill="${color}"/>
<text x="${x0 + r.ratio! * scale + 6}" y="${y + 18}" font-size="13">${r.ratio}</text>`;
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="24" font-size="16" font-weight="bold">platform ÷ anchor (higher is better for rates; lower for latencies)</text>
<line x1="${x0 + scale}" y1="34" x2="${x0 + scale}" y2="${h - 10}" stroke="#999" stroke-dasharray="4"/>
${bars}
</svg>`;
}
