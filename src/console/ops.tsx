// The console's views across jobs: overview per type, tenants' load, schedules' runs, queues and their controls.
import type { MinutePoint, ScheduledRun, TenantLoad, TypeStats } from '../db/console.js';
import type { ScheduleRow } from '../db/types.js';
import type { QueueInfo } from '../queues/controls.js';
import { PerMinuteChart } from './charts.js';
import { ActionButton, BASE, canChange, jobHref, Layout, type PageCtx, Seconds, StateBadge, When } from './layout.js';

export interface Window {
  label: string;
  minutes: number;
  stats: TypeStats[];
  points: MinutePoint[];
}

function seriesOf(points: MinutePoint[], type: string, minutes: number) {
  const ok = new Array<number>(minutes).fill(0);
  const bad = new Array<number>(minutes).fill(0);
  for (const p of points) {
    if (p.type !== type || p.ago < 0 || p.ago >= minutes) continue;
    ok[minutes - 1 - p.ago] = p.succeeded;
    bad[minutes - 1 - p.ago] = p.failed;
  }
  return [
    { label: 'succeeded', values: ok, color: '#1a7f37' },
    { label: 'failed', values: bad, color: '#b42318' },
  ];
}

export function OverviewPage(props: {
  ctx: PageCtx;
  types: string[];
  windows: Window[];
  backlog: Map<string, { waiting: number; running: number }>;
}) {
  return (
    <Layout title="Overview" ctx={props.ctx}>
      {props.windows.map((w) => (
        <section aria-labelledby={`w-${w.minutes}`}>
          <h2 id={`w-${w.minutes}`}>{w.label}</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col" class="num">
                  Succeeded
                </th>
                <th scope="col" class="num">
                  Failed
                </th>
                <th scope="col" class="num">
                  Failure rate
                </th>
                <th scope="col" class="num">
                  Queue wait p50
                </th>
                <th scope="col" class="num">
                  Queue wait p95
                </th>
                <th scope="col" class="num">
                  Run time p95
                </th>
                <th scope="col" class="num">
                  Backlog now
                </th>
              </tr>
            </thead>
            <tbody>
              {props.types.map((type) => {
                const s = w.stats.find((x) => x.type === type);
                const done = (s?.succeeded ?? 0) + (s?.failed ?? 0);
                const b = props.backlog.get(type);
                return (
                  <tr>
                    <th scope="row">
                      <a href={`${BASE}/jobs?type=${encodeURIComponent(type)}`}>{type}</a>
                    </th>
                    <td class="num">{s?.succeeded ?? 0}</td>
                    <td class="num">{s?.failed ?? 0}</td>
                    <td class="num">{done ? `${(((s?.failed ?? 0) / done) * 100).toFixed(1)} %` : '—'}</td>
                    <td class="num">
                      <Seconds s={s?.wait_p50} />
                    </td>
                    <td class="num">
                      <Seconds s={s?.wait_p95} />
                    </td>
                    <td class="num">
                      <Seconds s={s?.run_p95} />
                    </td>
                    <td class="num">
                      {b?.waiting ?? 0} waiting, {b?.running ?? 0} running
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          <div class="charts">
            {props.types
              .filter((t) => w.stats.some((s) => s.type === t))
              .map((type) => (
                <PerMinuteChart
                  title={`${type}: jobs finished per minute`}
                  minutes={w.minutes}
                  series={seriesOf(w.points, type, w.minutes)}
                />
              ))}
          </div>
        </section>
      ))}
    </Layout>
  );
}

export function TenantsPage(props: {
  ctx: PageCtx;
  cap: number;
  imageMp: number;
  rows: (TenantLoad & { mpLeft: number })[];
}) {
  return (
    <Layout title="Tenants" ctx={props.ctx}>
      <table>
        <thead>
          <tr>
            <th scope="col">Tenant</th>
            <th scope="col" class="num">
              Live jobs / in-flight cap
            </th>
            <th scope="col" class="num">
              Room under the cap
            </th>
            <th scope="col" class="num">
              Image megapixels left this minute
            </th>
            <th scope="col" class="num">
              Failures in 24 h
            </th>
            <th scope="col">Jobs</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((t) => (
            <tr>
              <th scope="row">{t.tenant}</th>
              <td class="num">
                {t.live} / {props.cap || 'no cap'}
              </td>
              <td class="num">{props.cap ? Math.max(0, props.cap - t.live) : '—'}</td>
              <td class="num">{props.imageMp ? `${t.mpLeft} of ${props.imageMp}` : 'no limit'}</td>
              <td class="num">
                <a href={`${BASE}/jobs?tenant=${encodeURIComponent(t.tenant)}&state=failed`}>{t.failed_24h}</a>
              </td>
              <td>
                <a href={`${BASE}/jobs?tenant=${encodeURIComponent(t.tenant)}`}>{t.tenant}’s jobs</a>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </Layout>
  );
}

const lateness = (r: ScheduledRun) => (r.started_at ? (r.started_at.getTime() - r.due.getTime()) / 1000 : null);

export function SchedulesPage(props: {
  ctx: PageCtx;
  rows: { schedule: ScheduleRow; next?: number; runs: ScheduledRun[] }[];
}) {
  return (
    <Layout title="Schedules" ctx={props.ctx}>
      {props.rows.length === 0 && <p class="muted">No schedules.</p>}
      {props.rows.map(({ schedule: s, next, runs }) => (
        <section aria-labelledby={`s-${s.name}`}>
          <h2 id={`s-${s.name}`}>{s.name}</h2>
          <p>
            {s.type} for {s.tenant}, {s.cron ? `cron ${s.cron}${s.tz ? ` (${s.tz})` : ''}` : `every ${s.every_ms} ms`}.
            Next run: <When at={next ? new Date(next) : null} />
          </p>
          {runs.length === 0 ? (
            <p class="muted">No runs yet.</p>
          ) : (
            <table>
              <caption class="muted">Last runs, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Due</th>
                  <th scope="col">Job</th>
                  <th scope="col">Outcome</th>
                  <th scope="col" class="num">
                    Started late by
                  </th>
                  <th scope="col">Finished</th>
                </tr>
              </thead>
              <tbody>
                {runs.map((r) => (
                  <tr>
                    <td>
                      <When at={r.due} />
                    </td>
                    <td>
                      <a href={jobHref(r.id)}>
                        <code>{r.id}</code>
                      </a>
                    </td>
                    <td>
                      <StateBadge state={r.state} />
                    </td>
                    <td class="num">
                      <Seconds s={lateness(r)} />
                    </td>
                    <td>
                      <When at={r.finished_at} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
      ))}
    </Layout>
  );
}

export function QueuesPage(props: { ctx: PageCtx; queues: QueueInfo[]; board: string; notice?: string }) {
  const acts = canChange(props.ctx.principal);
  return (
    <Layout title="Queues" ctx={props.ctx}>
      {props.notice && <p role="status">{props.notice}</p>}
      <p>
        The Redis-level view of each queue: <a href={props.board}>Bull Board</a>
        {acts ? '' : ' (read-only for viewers)'}.
      </p>
      <table>
        <thead>
          <tr>
            <th scope="col">Queue</th>
            <th scope="col">Paused</th>
            <th scope="col" class="num">
              Waiting
            </th>
            <th scope="col" class="num">
              Active
            </th>
            <th scope="col" class="num">
              Delayed
            </th>
            <th scope="col" class="num">
              Failed
            </th>
            <th scope="col" class="num">
              Workers
            </th>
            {acts && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {props.queues.map((q) => (
            <tr>
              <th scope="row">
                <a href={`${BASE}/jobs?type=${encodeURIComponent(q.name)}`}>{q.name}</a>
              </th>
              <td>{q.paused ? 'paused' : 'no'}</td>
              <td class="num">{q.counts.waiting}</td>
              <td class="num">{q.counts.active}</td>
              <td class="num">{q.counts.delayed}</td>
              <td class="num">{q.counts.failed}</td>
              <td class="num">{q.workers}</td>
              {acts && (
                <td>
                  <ActionButton
                    action={`${BASE}/queues/${q.name}/${q.paused ? 'resume' : 'pause'}`}
                    label={q.paused ? `Resume ${q.name}` : `Pause ${q.name}`}
                    csrf={props.ctx.csrf}
                  />
                  <ActionButton
                    action={`${BASE}/queues/${q.name}/retry-failed`}
                    label={`Retry failed ${q.name} jobs`}
                    csrf={props.ctx.csrf}
                  />
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </Layout>
  );
}
