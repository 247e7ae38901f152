// A job's timeline and log lines on its console page.
import type { ApiJobLogLine } from '../db/job-logs.js';
import type { Timeline } from '../db/timeline.js';
import { Seconds, StateBadge, When } from './layout.js';

const secs = (ms: number | null) => (ms === null ? null : ms / 1000);

export function TimelineSection(props: { timeline: Timeline }) {
  const t = props.timeline;
  return (
    <section aria-labelledby="timeline">
      <h2 id="timeline">Timeline</h2>
      <h3>Attempts</h3>
      {t.attempts.length === 0 ? (
        <p class="muted">Not started yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col" class="num">
                Run
              </th>
              <th scope="col" class="num">
                Attempt
              </th>
              <th scope="col">Worker (host:pid)</th>
              <th scope="col">Started</th>
              <th scope="col" class="num">
                Waited
              </th>
              <th scope="col" class="num">
                Ran
              </th>
              <th scope="col">Outcome</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {t.attempts.map((a) => (
              <tr>
                <td class="num">{a.generation}</td>
                <td class="num">{a.attempt}</td>
                <td>{a.process ?? '—'}</td>
                <td>
                  <When at={a.started_at} />
                </td>
                <td class="num">
                  <Seconds s={secs(a.wait_ms)} />
                </td>
                <td class="num">
                  <Seconds s={secs(a.run_ms)} />
                </td>
                <td>{a.outcome ? <StateBadge state={a.outcome} /> : 'running'}</td>
                <td>{a.error ? `${a.error.code}: ${a.error.message}` : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>State changes</h3>
      <table>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Change</th>
            <th scope="col" class="num">
              Run
            </th>
            <th scope="col" class="num">
              Attempt
            </th>
            <th scope="col">By (host:pid)</th>
            <th scope="col">Error</th>
          </tr>
        </thead>
        <tbody>
          <tr>
            <td>
              <When at={t.created_at} />
            </td>
            <td>accepted</td>
            <td class="num">0</td>
            <td class="num">0</td>
            <td>—</td>
            <td />
          </tr>
          {t.events.map((e) => (
            <tr>
              <td>
                <When at={e.at} />
              </td>
              <td>
                {e.from} → <StateBadge state={e.to} />
              </td>
              <td class="num">{e.generation}</td>
              <td class="num">{e.attempt}</td>
              <td>{e.process ?? '—'}</td>
              <td>{e.error ? `${e.error.code}: ${e.error.message}` : ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function LogSection(props: { lines: ApiJobLogLine[]; truncated: boolean }) {
  return (
    <section aria-labelledby="logs">
      <h2 id="logs">Log lines</h2>
      {props.truncated && <p class="muted">Older lines were dropped: a job keeps its most recent lines only.</p>}
      {props.lines.length === 0 ? (
        <p class="muted">No log lines.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col" class="num">
                Run
              </th>
              <th scope="col">Message</th>
              <th scope="col">Fields</th>
            </tr>
          </thead>
          <tbody>
            {props.lines.map((l) => (
              <tr>
                <td>
                  <When at={l.at} />
                </td>
                <td class="num">{l.generation}</td>
                <td>{l.message}</td>
                <td>{l.fields ? <code>{JSON.stringify(l.fields)}</code> : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
