// GET /v1/jobs/:id/events — a job's changes as Server-Sent Events, until it ends.
//
// Order of work matters: subscribe first (buffering), then read where the job's event stream stands, then the
// ledger. Whatever happens in between is either in the snapshot or in the buffer, never in neither.
import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import * as ledger from '../../db/jobs.js';
import { compareEventIds, isEventId, lastJobEventId, readJobEvents, type JobEvent } from '../../events.js';
import type { Context } from 'hono';
import { tenantScope, type AuthEnv } from '../auth.js';
import { problem, ProblemError } from '../errors.js';
import { problems, router, security } from '../openapi.js';
import { assertUuid, JobIdParam } from '../params.js';

const isTerminal = (e: JobEvent) => ledger.TERMINAL.includes(e.job.state);

/** One timer for all open streams of an app, rather than one per stream. */
function keepAlive(intervalMs: number) {
  const open = new Set<SSEStreamingApi>();
  let timer: NodeJS.Timeout | undefined;
  return {
    add(s: SSEStreamingApi) {
      open.add(s);
      timer ??= setInterval(() => {
        for (const st of open) void st.write(': keep-alive\n\n');
      }, intervalMs).unref();
    },
    delete(s: SSEStreamingApi) {
      open.delete(s);
      if (open.size === 0 && timer) {
        clearInterval(timer);
        timer = undefined;
      }
    },
  };
}

/** Open streams per API key in this process, each capped: one key cannot hold every socket and Redis listener. */
function streamCounter(max: number) {
  const open = new Map<string, number>();
  return {
    /** Counts one more stream for the key, or refuses with 429; the returned release may be called more than once. */
    acquire(keyId: string): () => void {
      const n = open.get(keyId) ?? 0;
      if (n >= max)
        throw new ProblemError(
          429,
          'too-many-streams',
          `This API key already has ${max} live streams open here; close one (or poll GET /v1/jobs/{id}).`,
          {},
          { 'Retry-After': '5' },
        );
      open.set(keyId, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (open.get(keyId) ?? 1) - 1;
        if (left > 0) open.set(keyId, left);
        else open.delete(keyId);
      };
    },
  };
}

export function eventsRoutes(deps: ApiServices) {
  const app = router();
  const { db, redis, config } = deps;
  const pings = keepAlive(config.SSE_KEEPALIVE_MS);
  const streams = streamCounter(config.SSE_MAX_STREAMS_PER_KEY);

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/events',
      summary: 'Live changes of a job (Server-Sent Events)',
      description:
        'Starts with the current state (event `state`), then one event `state` or `progress` per change, each with the job as JSON data and an `id`; ends after a terminal state. Comments (`: keep-alive`) keep idle connections open. Reconnect with `Last-Event-ID` to receive only what was missed; 204 when there is nothing more to send.',
      security,
      request: {
        params: JobIdParam,
        headers: z.object({ 'last-event-id': z.string().max(64).optional() }),
      },
      responses: {
        200: { description: 'The event stream', content: { 'text/event-stream': { schema: z.string() } } },
        204: { description: 'Reconnected after the job ended: nothing more to send' },
        ...problems(401, 404, 429, 503),
      },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const resumeFrom = c.req.valid('header')['last-event-id'];
      const release = streams.acquire(c.get('principal').keyId);
      try {
        return await openStream(c, release, id, resumeFrom);
      } catch (err) {
        release();
        throw err;
      }
    },
  );

  // The stream itself; `release` frees its place in the key's count when it ends (or never starts).
  const openStream = async (c: Context<AuthEnv>, release: () => void, id: string, resumeFrom: string | undefined) => {
    const hub = deps.hub;
    if (!hub) throw problem.unavailable('Live streams are not available on this process.');
    const job = await ledger.findJob(db, assertUuid(id), tenantScope(c.get('principal')));
    if (!job) throw problem.notFound('job');

    // Events that arrive before the first write wait here; then `deliver` takes over.
    let buffer: JobEvent[] | undefined = [];
    let deliver: (e: JobEvent) => void = () => {};
    let resync: () => void = () => {};
    let end: () => void = () => {};
    const unsubscribe = await hub
      .subscribe(job.id, {
        event: (e) => (buffer ? buffer.push(e) : deliver(e)),
        resync: () => resync(),
        close: () => end(),
      })
      .catch(() => {
        throw problem.unavailable(
          'Live streams are unavailable right now (Redis); poll GET /v1/jobs/{id} or try again shortly.',
        );
      });

    // `snapshot`: the ledger's view, sent whatever its id; `replay`: what the job's stream holds after Last-Event-ID.
    let snapshot: JobEvent | undefined;
    let replay: JobEvent[] = [];
    let lastId: string;
    try {
      if (isEventId(resumeFrom)) {
        replay = await readJobEvents(redis, config, job.id, resumeFrom);
        lastId = resumeFrom;
        if (replay.length === 0) {
          const head = await lastJobEventId(redis, config, job.id);
          const row = (await ledger.findJob(db, job.id))!;
          // Up to date and over: tell EventSource to stop reconnecting.
          if (head === resumeFrom && ledger.TERMINAL.includes(row.state)) {
            unsubscribe();
            release();
            return c.body(null, 204);
          }
          // The job's stream expired or never held that id: start again from the ledger.
          if (head !== resumeFrom) {
            snapshot = { event: 'state', job: ledger.toApiJob(row), id: head };
            lastId = head;
          }
        }
      } else {
        lastId = await lastJobEventId(redis, config, job.id);
        const row = (await ledger.findJob(db, job.id))!;
        snapshot = { event: 'state', job: ledger.toApiJob(row), id: lastId };
      }
    } catch (err) {
      unsubscribe();
      throw err;
    }

    return streamSSE(c, async (stream) => {
      let lastJson = '';
      let done = false;
      let chain = Promise.resolve();
      const finished = new Promise<void>((resolve) => (end = resolve));

      const write = async (e: JobEvent, force = false) => {
        if (done || stream.aborted) return;
        if (!force && (!e.id || compareEventIds(e.id, lastId) <= 0)) return;
        const data = JSON.stringify(e.job);
        if (!force) lastId = e.id!;
        // The snapshot may already show a change that is also in the buffer: do not send it twice.
        if (data === lastJson) return;
        lastJson = data;
        await stream.writeSSE({ event: e.event, data, id: lastId });
        if (e.event === 'state' && isTerminal(e)) {
          done = true;
          end();
        }
      };
      const enqueue = (fn: () => Promise<void>) => (chain = chain.then(fn).catch(() => end()));

      stream.onAbort(() => end());
      pings.add(stream);
      try {
        // Sends the headers at once even when a resumed stream has nothing to replay, and tells EventSource how
        // soon to reconnect if the connection drops.
        await stream.write('retry: 2000\n\n');
        if (snapshot) await write(snapshot, true);
        for (const e of replay) await write(e);
        // Drop buffered events the snapshot already contains (up to the last one equal to it).
        const pending = buffer ?? [];
        const seen = pending.map((e) => JSON.stringify(e.job)).lastIndexOf(lastJson);
        buffer = undefined;
        for (const e of pending.slice(seen + 1)) await write(e);
        deliver = (e) => enqueue(() => write(e));
        resync = () =>
          enqueue(async () => {
            for (const e of await readJobEvents(redis, config, job.id, lastId)) await write(e);
          });
        if (!done) await finished;
        await chain;
      } finally {
        pings.delete(stream);
        unsubscribe();
        release();
      }
    });
  };

  return app;
}
