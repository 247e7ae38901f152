// Charts drawn on the server as SVG (no script, no CDN): succeeded and failed jobs per minute as two lines.

export interface Series {
  label: string;
  /** One value per minute, oldest first. */
  values: number[];
  color: string;
}

const W = 480;
const H = 120;
const PAD = { left: 34, right: 6, top: 8, bottom: 18 };

export function PerMinuteChart(props: { title: string; minutes: number; series: Series[] }) {
  const max = Math.max(1, ...props.series.flatMap((s) => s.values));
  const x = (i: number) => PAD.left + (i / Math.max(1, props.minutes - 1)) * (W - PAD.left - PAD.right);
  const y = (v: number) => PAD.top + (1 - v / max) * (H - PAD.top - PAD.bottom);
  const totals = props.series.map((s) => `${s.label} ${s.values.reduce((a, b) => a + b, 0)}`).join(', ');
  const span = props.minutes >= 120 ? `${props.minutes / 60} h` : `${props.minutes} min`;
  return (
    <figure>
      <svg
        width={W}
        height={H}
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-label={`${props.title}: per minute over the last ${span}; ${totals}`}
      >
        <title>{props.title}</title>
        <line x1={PAD.left} y1={y(0)} x2={W - PAD.right} y2={y(0)} stroke="#9aa3b5" />
        <line x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={y(0)} stroke="#9aa3b5" />
        <text x={PAD.left - 4} y={PAD.top + 8} font-size="10" text-anchor="end">
          {max}
        </text>
        <text x={PAD.left - 4} y={y(0)} font-size="10" text-anchor="end">
          0
        </text>
        <text x={PAD.left} y={H - 4} font-size="10">
          −{span}
        </text>
        <text x={W - PAD.right} y={H - 4} font-size="10" text-anchor="end">
          now
        </text>
        {props.series.map((s) => (
          <polyline
            fill="none"
            stroke={s.color}
            stroke-width="1.5"
            points={s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}
          />
        ))}
      </svg>
      <figcaption>
        {props.title} — {totals}
      </figcaption>
    </figure>
  );
}
