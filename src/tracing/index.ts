// Tracing helpers for the code that does the work. All of them are no-ops (no span, no allocation beyond a call)
// unless the bootstrap (./register.ts, loaded with `--import`) started the OpenTelemetry SDK in this process.
//
// A job's trace context is stored with it (jobs.trace_context) in the format BullMQ's telemetry uses for a job's
// `opts.telemetry.metadata` (the W3C carrier as JSON), so whoever enqueues a ledger row again (the reconciler, a
// retry) puts its run in the trace of the request that submitted it.
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
} from '@opentelemetry/api';
import { BullMQOtel } from 'bullmq-otel';

const TRACER = 'movie-jobs';
let started: { shutdown(): Promise<void> } | undefined;
let bullmq: BullMQOtel | undefined;

/** Called by the bootstrap once the SDK runs; `sdk.shutdown()` flushes the spans still buffered. */
export function tracingStarted(sdk: { shutdown(): Promise<void> }): void {
  started = sdk;
}

/** Exports what is buffered and stops; called on shutdown, before the process exits. */
export async function flushTracing(): Promise<void> {
  await started?.shutdown().catch(() => undefined);
}

/** BullMQ's own producer and consumer spans (`add <queue>`, `process <queue>`), for Queue and Worker options. */
export function bullTelemetry(): BullMQOtel | undefined {
  if (!started) return undefined;
  bullmq ??= new BullMQOtel({ tracerName: 'bullmq' });
  return bullmq;
}

/** The active span's context as a job's stored trace context; null when tracing is off or nothing is traced. */
export function currentTraceContext(): string | null {
  if (!started) return null;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent ? JSON.stringify(carrier) : null;
}

/** The trace id in a job's stored trace context (its W3C `traceparent`), for people to look the trace up. */
export function traceIdOf(stored: string | null | undefined): string | undefined {
  if (!stored) return undefined;
  try {
    const traceparent = (JSON.parse(stored) as { traceparent?: unknown }).traceparent;
    const id = typeof traceparent === 'string' ? traceparent.split('-')[1] : undefined;
    return id && /^[0-9a-f]{32}$/.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

function contextOf(stored: string | null | undefined): Context | undefined {
  if (!started || !stored) return undefined;
  try {
    return propagation.extract(ROOT_CONTEXT, JSON.parse(stored));
  } catch {
    return undefined;
  }
}

/** Runs `fn` in the stored trace context (a job's), so the spans it starts belong to that job's trace. */
export function inTraceOf<T>(stored: string | null | undefined, fn: () => T): T {
  const ctx = contextOf(stored);
  return ctx ? context.with(ctx, fn) : fn();
}

/** Links to the stored trace contexts: a batch's span points at the spans of the jobs it carries. */
export function linksTo(stored: (string | null | undefined)[]): Link[] {
  if (!started) return [];
  const links: Link[] = [];
  for (const s of stored) {
    const ctx = contextOf(s);
    const span = ctx && trace.getSpanContext(ctx);
    if (span) links.push({ context: span });
  }
  return links;
}

/**
 * Runs `fn` inside a new span (a child of the active one), ended when `fn` settles; an error is recorded on it.
 * Without tracing, `fn` simply runs.
 */
export function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span?: Span) => Promise<T>,
  links?: () => Link[],
): Promise<T> {
  if (!started) return fn();
  return trace.getTracer(TRACER).startActiveSpan(name, { attributes, links: links?.() }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Marks the active span (a BullMQ `process` span, in a worker) as being about this job's run. */
export function tagJobSpan(attributes: { id: string; type: string; attempt: number; generation: number }): void {
  if (!started) return;
  trace.getActiveSpan()?.setAttributes({
    'job.id': attributes.id,
    'job.type': attributes.type,
    'job.attempt': attributes.attempt,
    'job.generation': attributes.generation,
  });
}
