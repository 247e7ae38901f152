// The console's page frame: navigation by role, the logout form, and small shared pieces (forms with the CSRF
// token, dates, JSON blocks).
import type { Child } from 'hono/jsx';
import type { Principal } from '../auth/keys.js';

export const BASE = '/console';

export interface PageCtx {
  principal: Principal;
  csrf: string;
}

/** Operators and viewers see every tenant; a client key its own. */
export const seesAll = (p: Principal) => p.role !== 'client';
export const canChange = (p: Principal) => p.role !== 'viewer';

export function Layout(props: { title: string; ctx?: PageCtx; children?: Child }) {
  const p = props.ctx?.principal;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{`${props.title} · movie-jobs console`}</title>
        <link rel="stylesheet" href={`${BASE}/assets/console.css`} />
        <script src={`${BASE}/assets/console.js`} defer />
      </head>
      <body>
        <header>
          <a class="brand" href={BASE}>
            movie-jobs console
          </a>
          {p && (
            <nav aria-label="Console">
              <a href={BASE}>Overview</a>
              <a href={`${BASE}/jobs`}>Jobs</a>
              {seesAll(p) && <a href={`${BASE}/tenants`}>Tenants</a>}
              <a href={`${BASE}/schedules`}>Schedules</a>
              {seesAll(p) && <a href={`${BASE}/queues`}>Queues</a>}
            </nav>
          )}
          {p && props.ctx && (
            <form method="post" action={`${BASE}/logout`} class="who">
              <span>
                {p.role} · {p.tenant} · {p.keyId}
              </span>
              <Csrf token={props.ctx.csrf} />
              <button type="submit">Log out</button>
            </form>
          )}
        </header>
        <main>
          <h1>{props.title}</h1>
          {props.children}
        </main>
      </body>
    </html>
  );
}

const Csrf = (props: { token: string }) => <input type="hidden" name="_csrf" value={props.token} />;

/** A POST button (cancel, retry, pause…): a one-button form carrying the session's CSRF token. */
export function ActionButton(props: { action: string; label: string; csrf: string; danger?: boolean }) {
  return (
    <form method="post" action={props.action} class="inline">
      <Csrf token={props.csrf} />
      <button type="submit" class={props.danger ? 'danger' : undefined}>
        {props.label}
      </button>
    </form>
  );
}

export function When(props: { at: Date | string | null | undefined }) {
  if (!props.at) return <span class="muted">—</span>;
  const d = typeof props.at === 'string' ? new Date(props.at) : props.at;
  return <time datetime={d.toISOString()}>{d.toISOString().replace('T', ' ').slice(0, 23)}</time>;
}

export function Seconds(props: { s: number | null | undefined }) {
  if (props.s === null || props.s === undefined) return <span class="muted">—</span>;
  return <>{props.s < 10 ? props.s.toFixed(2) : props.s.toFixed(1)} s</>;
}

export function JsonBlock(props: { value: unknown; label: string }) {
  if (props.value === null || props.value === undefined) return <p class="muted">None.</p>;
  return <pre tabindex={0}>{JSON.stringify(props.value, null, 2)}</pre>;
}

export function StateBadge(props: { state: string }) {
  return <span class={`state state-${props.state}`}>{props.state}</span>;
}

export const jobHref = (id: string) => `${BASE}/jobs/${id}`;
