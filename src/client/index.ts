// A typed client for the movie-jobs API: submit, get, wait (live over SSE, falling back to polling), cancel.
//
// Types come from the server's own schemas (type-only imports), so a payload that the API would refuse is a compile
// error here. The one module of the server it loads at run time is src/domain.ts, the domain terms, which imports
// nothing. Runs wherever `fetch` does (Node 18+, browsers, Deno).
import type { z } from 'zod';
import type { ApiJob } from '../jobs/api-job.js';
import { type JobState, TERMINAL, type Priority, type WebhookOutcome } from '../domain.js';
import type { emailPayload } from '../jobs/email/index.js';
import type { imagePayload } from '../jobs/image/index.js';
import type { recommendationsPayload } from '../jobs/recommendations/index.js';
import type { reportPayload } from '../jobs/report/index.js';
import { parseSse } from './sse.js';

export type Job = ApiJob;
export type { JobState };

/** Payload of each job type, as the API accepts it (defaults optional). */
export interface Payloads {
  recommendations: z.input<typeof recommendationsPayload>;
  email: z.input<typeof emailPayload>;
  image: z.input<typeof imagePayload>;
  report: z.input<typeof reportPayload>;
}
export type JobType = keyof Payloads;

export type Submission<T extends JobType = JobType> = {
  [K in T]: {
    type: K;
    payload: Payloads[K];
    priority?: Priority;
    /** ISO time; a future one delays the job. */
    run_at?: string;
    /** POSTed the job's terminal state, signed with the tenant's webhook secret. */
    callback_url?: string;
    /** A run's time limit in ms, up to the type's maximum; the type's default when absent. */
    timeout_ms?: number;
    /** ISO time: a job not started by then never starts (it ends cancelled, error.code "expired"). */
    expires_at?: string;
  };
}[T];

export interface JobEvent {
  event: 'state' | 'progress';
  id?: string;
  job: Job;
}

export interface WebhookDelivery {
  id: number;
  message_id: string;
  event: string;
  url: string;
  attempt: number;
  outcome: WebhookOutcome;
  status_code: number | null;
  error: string | null;
  duration_ms: number;
  created_at: string;
}

/** An error answer of the API (RFC 9457 problem details). */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly problem: {
      type?: string;
      title?: string;
      detail?: string;
      errors?: { path: string; message: string }[];
    } & Record<string, unknown>,
  ) {
    super(`${status} ${problem.title ?? ''}: ${problem.detail ?? ''}`.trim());
  }
}

export interface ClientOptions {
  baseUrl: string;
  apiKey: string;
  /** Another fetch (a proxy agent, a test double); defaults to the global one. */
  fetch?: typeof fetch;
  /** How often `wait` polls when it cannot stream. */
  pollIntervalMs?: number;
}

export interface WaitOptions {
  /** Every change: the first is the current state. */
  onEvent?: (event: JobEvent) => void;
  signal?: AbortSignal;
  /** 'auto' streams and falls back to polling when streaming is not possible. */
  transport?: 'auto' | 'sse' | 'poll';
  /** Reconnects (with Last-Event-ID) before giving up on the stream; then 'auto' polls. */
  maxReconnects?: number;
}

export { TERMINAL };
const isTerminal = (job: Job) => TERMINAL.includes(job.state);

export class JobsClient {
  private readonly base: string;
  private readonly fetch: typeof fetch;
  private readonly pollMs: number;

  constructor(private readonly opts: ClientOptions) {
    this.base = opts.baseUrl.replace(/\/+$/, '');
    this.fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.pollMs = opts.pollIntervalMs ?? 1_000;
  }

  private async call<T>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
    signal?: AbortSignal,
  ): Promise<T> {
    const res = await this.fetch(this.base + path, {
      method,
      headers: {
        authorization: `Bearer ${this.opts.apiKey}`,
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as unknown) : undefined;
    if (!res.ok) throw new ApiError(res.status, (parsed as ApiError['problem']) ?? {});
    return parsed as T;
  }

  /** Submits a job (202); with `idempotencyKey`, a repeat of the same request answers the first job. */
  submit<T extends JobType>(spec: Submission<T>, opts: { idempotencyKey?: string } = {}): Promise<Job> {
    return this.call('POST', '/v1/jobs', spec, opts.idempotencyKey ? { 'idempotency-key': opts.idempotencyKey } : {});
  }

  /** Up to 1000 jobs; all accepted or none. */
  async submitMany(specs: Submission[]): Promise<Job[]> {
    return (await this.call<{ jobs: Job[] }>('POST', '/v1/jobs/bulk', { jobs: specs })).jobs;
  }

  get(id: string, signal?: AbortSignal): Promise<Job> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`, undefined, {}, signal);
  }

  /** Queued or delayed: cancelled at once. Running: the processor is told to stop. Ended: ApiError 409. */
  cancel(id: string): Promise<Job> {
    return this.call('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`);
  }

  retry(id: string): Promise<Job> {
    return this.call('POST', `/v1/jobs/${encodeURIComponent(id)}/retry`);
  }

  /** Uploads bytes (an image for an `image` job); 201 with the file's id. */
  async upload(
    bytes: Uint8Array | Blob,
    contentType: string,
  ): Promise<{ id: string; content_type: string; bytes: number; sha256: string }> {
    const res = await this.fetch(`${this.base}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.opts.apiKey}`, 'content-type': contentType },
      body: bytes as NonNullable<Parameters<typeof fetch>[1]>['body'],
    });
    const parsed = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok) throw new ApiError(res.status, parsed);
    return parsed as { id: string; content_type: string; bytes: number; sha256: string };
  }

  async webhooks(id: string): Promise<WebhookDelivery[]> {
    return (await this.call<{ items: WebhookDelivery[] }>('GET', `/v1/jobs/${encodeURIComponent(id)}/webhooks`)).items;
  }

  async webhookSecret(): Promise<string> {
    return (await this.call<{ webhook_secret: string }>('GET', '/v1/webhook-secret')).webhook_secret;
  }

  /**
   * The job's live events (SSE) until it ends. Yields nothing more after a terminal state. Throws ApiError for an
   * error answer, and the network error if the connection fails; `lastEventId` resumes after a known event.
   */
  async *events(id: string, opts: { lastEventId?: string; signal?: AbortSignal } = {}): AsyncGenerator<JobEvent> {
    const res = await this.fetch(`${this.base}/v1/jobs/${encodeURIComponent(id)}/events`, {
      headers: {
        authorization: `Bearer ${this.opts.apiKey}`,
        accept: 'text/event-stream',
        ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}),
      },
      signal: opts.signal,
    });
    if (res.status === 204) return; // resumed after the end: nothing more
    if (!res.ok || !res.body) {
      const text = await res.text().catch(() => '');
      let problem = {};
      try {
        problem = JSON.parse(text);
      } catch {
        /* not a problem document */
      }
      throw new ApiError(res.status, problem);
    }
    for await (const msg of parseSse(res.body)) {
      if (msg.event !== 'state' && msg.event !== 'progress') continue;
      const event: JobEvent = { event: msg.event, id: msg.id, job: JSON.parse(msg.data) as Job };
      yield event;
      if (event.event === 'state' && isTerminal(event.job)) return;
    }
  }

  /** Resolves with the job once it has ended (succeeded, failed or cancelled). */
  async wait(id: string, opts: WaitOptions = {}): Promise<Job> {
    const transport = opts.transport ?? 'auto';
    if (transport !== 'poll') {
      let lastEventId: string | undefined;
      let last: Job | undefined;
      let failures = 0;
      for (;;) {
        try {
          for await (const e of this.events(id, { lastEventId, signal: opts.signal })) {
            lastEventId = e.id ?? lastEventId;
            last = e.job;
            failures = 0;
            opts.onEvent?.(e);
            if (e.event === 'state' && isTerminal(e.job)) return e.job;
          }
          // Ended without a terminal event (a server restart, 204 after a resume): ask, then reconnect.
          const now = await this.get(id, opts.signal);
          if (isTerminal(now)) return now;
          if (++failures > (opts.maxReconnects ?? 3)) break;
          await sleep(Math.min(250 * 2 ** failures, 5_000), opts.signal);
        } catch (err) {
          if (opts.signal?.aborted) throw err;
          // A client error (bad key, unknown job) will not get better by retrying or polling.
          if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429) throw err;
          if (++failures > (opts.maxReconnects ?? 3)) {
            if (transport === 'sse') throw err;
            break;
          }
          await sleep(Math.min(250 * 2 ** failures, 5_000), opts.signal);
        }
      }
      return this.poll(id, opts, last);
    }
    return this.poll(id, opts);
  }

  private async poll(id: string, opts: WaitOptions, last?: Job): Promise<Job> {
    for (;;) {
      const job = await this.get(id, opts.signal);
      if (!last || last.state !== job.state || last.progress !== job.progress) {
        opts.onEvent?.({ event: last && last.state === job.state ? 'progress' : 'state', job });
      }
      last = job;
      if (isTerminal(job)) return job;
      await sleep(this.pollMs, opts.signal);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason)), { once: true });
  });
}

export function createClient(opts: ClientOptions): JobsClient {
  return new JobsClient(opts);
}
