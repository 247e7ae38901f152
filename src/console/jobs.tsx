// The console's job pages: search (one box and filters, newest first, cursor pages) and one job's whole story.
import type { ApiAudit } from '../db/audit.js';
import type { ApiJobLogLine } from '../db/job-logs.js';
import type { ApiJob } from '../jobs/api-job.js';
import type { Timeline } from '../db/timeline.js';
import { JOB_STATES, PRIORITIES, TERMINAL, WAITING } from '../domain.js';
import type { EmailDeliveryRow, JobRow, WebhookDeliveryRow } from '../db/types.js';
import {
  ActionButton,
  BASE,
  canChange,
  JsonBlock,
  jobHref,
  Layout,
  type PageCtx,
  seesAll,
  StateBadge,
  When,
} from './layout.js';
import { LogSection, TimelineSection } from './story.js';

export interface SearchForm {
  q?: string;
  tenant?: string;
  type?: string;
  state?: string;
  priority?: string;
  error_code?: string;
  created_after?: string;
  created_before?: string;
  parent_id?: string;
  dedupe_key?: string;
}

function Field(props: { name: keyof SearchForm; label: string; value?: string; type?: string }) {
  return (
    <label>
      {props.label}
      <input name={props.name} type={props.type ?? 'text'} value={props.value ?? ''} />
    </label>
  );
}

function Choice(props: { name: keyof SearchForm; label: string; value?: string; options: readonly string[] }) {
  return (
    <label>
      {props.label}
      <select name={props.name}>
        <option value="">any</option>
        {props.options.map((o) => (
          <option value={o} selected={o === props.value}>
            {o}
          </option>
        ))}
      </select>
    </label>
  );
}

export function SearchPage(props: {
  ctx: PageCtx;
  form: SearchForm;
  types: string[];
  jobs: ApiJob[];
  nextHref?: string;
}) {
  const f = props.form;
  return (
    <Layout title="Jobs" ctx={props.ctx}>
      <search>
        <form method="get" action={`${BASE}/jobs`} class="filters">
          <label class="search">
            Search job id, payload, result or error
            <input type="search" name="q" value={f.q ?? ''} placeholder="an email address, a user id, a job id…" />
          </label>
          {seesAll(props.ctx.principal) && <Field name="tenant" label="Tenant" value={f.tenant} />}
          <Choice name="type" label="Type" value={f.type} options={props.types} />
          <Choice name="state" label="State" value={f.state} options={JOB_STATES} />
          <Choice name="priority" label="Priority" value={f.priority} options={PRIORITIES} />
          <Field name="error_code" label="Error code" value={f.error_code} />
          <Field name="created_after" label="Created after (UTC)" type="datetime-local" value={f.created_after} />
          <Field name="created_before" label="Created before (UTC)" type="datetime-local" value={f.created_before} />
          <Field name="parent_id" label="Parent job id" value={f.parent_id} />
          <Field name="dedupe_key" label="Dedupe key" value={f.dedupe_key} />
          <div>
            <button type="submit">Search</button>
          </div>
        </form>
      </search>
      <JobTable jobs={props.jobs} caption="Jobs, newest first" showTenant={seesAll(props.ctx.principal)} />
      {props.nextHref && (
        <p>
          <a href={props.nextHref} rel="next">
            Older jobs →
          </a>
        </p>
      )}
    </Layout>
  );
}

function JobTable(props: { jobs: ApiJob[]; caption: string; showTenant: boolean }) {
  if (props.jobs.length === 0) return <p class="muted">No jobs.</p>;
  return (
    <table>
      <caption class="muted">{props.caption}</caption>
      <thead>
        <tr>
          <th scope="col">Job</th>
          <th scope="col">Type</th>
          <th scope="col">State</th>
          <th scope="col">Priority</th>
          {props.showTenant && <th scope="col">Tenant</th>}
          <th scope="col">Created</th>
          <th scope="col">Error</th>
        </tr>
      </thead>
      <tbody>
        {props.jobs.map((j) => (
          <tr>
            <td>
              <a href={jobHref(j.id)}>
                <code>{j.id}</code>
              </a>
            </td>
            <td>{j.type}</td>
            <td>
              <StateBadge state={j.state} />
            </td>
            <td>{j.priority}</td>
            {props.showTenant && <td>{j.tenant}</td>}
            <td>
              <When at={j.created_at} />
            </td>
            <td>{j.error ? <code>{j.error.code}</code> : ''}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Where an audited action came from: the surface recorded with it, or what its action name says. */
const surfaceOf = (a: ApiAudit) => a.surface ?? (a.action.startsWith('dashboard.') ? 'dashboard' : 'api');

export interface JobStory {
  job: ApiJob;
  /** The trace the job's runs belong to (tracing on): its id, to look it up in the tracing backend. */
  traceId?: string;
  /** When it was handed to the queue (fairness admission); null: waiting for its tenant's window. */
  admittedAt?: Date | null;
  parent?: ApiJob;
  children: JobRow[];
  webhooks: WebhookDeliveryRow[];
  emails: EmailDeliveryRow[];
  audit: ApiAudit[];
  timeline?: Timeline;
  logs: { items: ApiJobLogLine[]; truncated: boolean };
}

export function JobPage(props: { ctx: PageCtx; story: JobStory; mayAct: boolean }) {
  const { job } = props.story;
  const live = !TERMINAL.includes(job.state);
  const csrf = props.ctx.csrf;
  const acts = props.mayAct && canChange(props.ctx.principal);
  return (
    <Layout title={`Job ${job.id}`} ctx={props.ctx}>
      <section aria-labelledby="summary">
        <h2 id="summary">Summary</h2>
        <dl class="facts" data-live-job={live ? job.id : undefined} data-state={job.state}>
          <dt>State</dt>
          <dd>
            <StateBadge state={job.state} />
            {job.cancel_requested ? ' (cancel requested)' : ''}
          </dd>
          <dt>Type</dt>
          <dd>{job.type}</dd>
          <dt>Tenant</dt>
          <dd>{job.tenant}</dd>
          <dt>Priority</dt>
          <dd>{job.priority}</dd>
          <dt>Attempts</dt>
          <dd>
            {job.attempts} of {job.max_attempts}
          </dd>
          <dt>Progress</dt>
          <dd>
            <progress max={100} value={job.progress} aria-label="Progress" />{' '}
            <span data-progress-label>{job.progress}%</span>
          </dd>
          <dt>Created</dt>
          <dd>
            <When at={job.created_at} />
          </dd>
          <dt>Run at</dt>
          <dd>
            <When at={job.run_at} />
          </dd>
          <dt>Expires</dt>
          <dd>
            <When at={job.expires_at} />
          </dd>
          <dt>Time limit</dt>
          <dd>{job.timeout_ms === null ? "type's default" : `${job.timeout_ms} ms per run`}</dd>
          <dt>Admitted</dt>
          <dd>
            {props.story.admittedAt ? (
              <When at={props.story.admittedAt} />
            ) : WAITING.includes(job.state) ? (
              "waiting for its tenant's window"
            ) : (
              '—'
            )}
          </dd>
          <dt>Started</dt>
          <dd>
            <When at={job.started_at} />
          </dd>
          <dt>Finished</dt>
          <dd>
            <When at={job.finished_at} />
          </dd>
          <dt>Trace</dt>
          <dd>{props.story.traceId ? <code>{props.story.traceId}</code> : '—'}</dd>
          <dt>Dedupe key</dt>
          <dd>
            {job.dedupe_key ? (
              <a href={`${BASE}/jobs?${new URLSearchParams({ dedupe_key: job.dedupe_key })}`}>
                <code>{job.dedupe_key}</code>
              </a>
            ) : (
              '—'
            )}
          </dd>
          <dt>Parent</dt>
          <dd>
            {props.story.parent ? (
              <>
                <a href={jobHref(props.story.parent.id)}>{props.story.parent.id}</a> ({props.story.parent.type},{' '}
                <StateBadge state={props.story.parent.state} />)
              </>
            ) : (
              '—'
            )}
          </dd>
        </dl>
        {acts && (
          <p>
            {live && <ActionButton action={`${jobHref(job.id)}/cancel`} label="Cancel" csrf={csrf} danger />}
            {(job.state === 'failed' || job.state === 'cancelled') && (
              <ActionButton action={`${jobHref(job.id)}/retry`} label="Retry" csrf={csrf} />
            )}
          </p>
        )}
      </section>

      <section aria-labelledby="error">
        <h2 id="error">Error</h2>
        {job.error ? (
          <p class="error">
            <code>{job.error.code}</code>: {job.error.message}
          </p>
        ) : (
          <p class="muted">None.</p>
        )}
      </section>
      <section aria-labelledby="payload">
        <h2 id="payload">Payload</h2>
        <JsonBlock value={job.payload} label="Payload" />
      </section>
      <section aria-labelledby="result">
        <h2 id="result">Result</h2>
        <JsonBlock value={job.result} label="Result" />
      </section>

      {props.story.timeline && <TimelineSection timeline={props.story.timeline} />}
      <LogSection lines={props.story.logs.items} truncated={props.story.logs.truncated} />
      <Children rows={props.story.children} />
      <Emails rows={props.story.emails} />
      <Webhooks rows={props.story.webhooks} />
      <section aria-labelledby="audit">
        <h2 id="audit">Audit entries</h2>
        {props.story.audit.length === 0 ? (
          <p class="muted">Nobody has acted on this job.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Action</th>
                <th scope="col">Who</th>
                <th scope="col">From</th>
                <th scope="col">Client address</th>
              </tr>
            </thead>
            <tbody>
              {props.story.audit.map((a) => (
                <tr>
                  <td>
                    <When at={a.at} />
                  </td>
                  <td>{a.action}</td>
                  <td>
                    {a.actor.role} · {a.actor.tenant} · {a.actor.key_id}
                  </td>
                  <td>{surfaceOf(a)}</td>
                  <td>{a.client_addr ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </Layout>
  );
}

function Children(props: { rows: JobRow[] }) {
  if (props.rows.length === 0) return null;
  return (
    <section aria-labelledby="children">
      <h2 id="children">Children</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Type</th>
            <th scope="col">State</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((r) => (
            <tr>
              <td>
                <a href={jobHref(r.id)}>
                  <code>{r.id}</code>
                </a>
              </td>
              <td>{r.type}</td>
              <td>
                <StateBadge state={r.state} />
              </td>
              <td>
                <When at={r.created_at} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Emails(props: { rows: EmailDeliveryRow[] }) {
  if (props.rows.length === 0) return null;
  return (
    <section aria-labelledby="recipients">
      <h2 id="recipients">Email recipients</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Recipient</th>
            <th scope="col">Delivery</th>
            <th scope="col" class="num">
              Tries
            </th>
            <th scope="col">Server reply</th>
            <th scope="col">Sent</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((r) => (
            <tr>
              <td>{r.recipient}</td>
              <td>
                <StateBadge state={r.state} />
              </td>
              <td class="num">{r.attempts}</td>
              <td>{r.response ?? ''}</td>
              <td>
                <When at={r.sent_at} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Webhooks(props: { rows: WebhookDeliveryRow[] }) {
  if (props.rows.length === 0) return null;
  return (
    <section aria-labelledby="webhooks">
      <h2 id="webhooks">Webhook tries</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Event</th>
            <th scope="col" class="num">
              Try
            </th>
            <th scope="col">Outcome</th>
            <th scope="col" class="num">
              Status
            </th>
            <th scope="col">Error</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((r) => (
            <tr>
              <td>
                <When at={r.created_at} />
              </td>
              <td>{r.event}</td>
              <td class="num">{r.attempt}</td>
              <td>{r.outcome}</td>
              <td class="num">{r.status_code ?? ''}</td>
              <td>{r.error ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
