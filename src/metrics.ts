// Prometheus metrics (prom-client). One registry per process: the API serves it at /metrics, each worker
// process on its own small port (WORKER_METRICS_PORT), so Prometheus scrapes every process.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UnrecoverableError, type Job, type Worker } from 'bullmq';
import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { priorityOfBull } from './domain.js';
import { CANCELLED } from './errors.js';

export const registry = new Registry();
collectDefaultMetrics({ register: registry });

const jobBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

const jobsCompleted = new Counter({
  name: 'jobs_completed_total',
  help: 'Jobs that ended succeeded, per type',
  labelNames: ['type'] as const,
  registers: [registry],
});
const jobsFailed = new Counter({
  name: 'jobs_failed_total',
  help: 'Jobs that ended failed (no attempts left, or a permanent error), per type',
  labelNames: ['type'] as const,
  registers: [registry],
});
const jobsCancelled = new Counter({
  name: 'jobs_cancelled_total',
  help: 'Running jobs stopped by a cancel request, per type',
  labelNames: ['type'] as const,
  registers: [registry],
});
const jobRetries = new Counter({
  name: 'job_retries_total',
  help: 'Failed attempts that will be retried, per type',
  labelNames: ['type'] as const,
  registers: [registry],
});
const jobsStalled = new Counter({
  name: 'jobs_stalled_total',
  help: 'Jobs found stalled (their worker stopped renewing the lock), per type',
  labelNames: ['type'] as const,
  registers: [registry],
});
const jobDuration = new Histogram({
  name: 'job_run_duration_seconds',
  help: 'Time from a run starting to it ending (succeeded or failed), per type and priority',
  labelNames: ['type', 'priority'] as const,
  buckets: jobBuckets,
  registers: [registry],
});
const jobQueueWait = new Histogram({
  name: 'job_queue_wait_seconds',
  help: 'Time from a job becoming runnable (added, or its run_at) to its first run starting, per type and priority',
  labelNames: ['type', 'priority'] as const,
  buckets: jobBuckets,
  registers: [registry],
});
const httpRequests = new Counter({
  name: 'http_requests_total',
  help: 'API requests, per method, route pattern and status',
  labelNames: ['method', 'route', 'status'] as const,
  registers: [registry],
});
const httpDuration = new Histogram({
  name: 'http_request_duration_seconds',
  help: 'API latency, per method, route pattern and status',
  labelNames: ['method', 'route', 'status'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

export const reconcilerRepairs = new Counter({
  name: 'reconciler_repairs_total',
  help: 'Ledger jobs the reconciler repaired: requeued (missing from Redis) or settled (finished in Redis, not in the ledger)',
  labelNames: ['action'] as const,
  registers: [registry],
});

export const retentionPruned = new Counter({
  name: 'retention_pruned_rows_total',
  help: 'Rows retention deleted, per table (jobs, job_events, job_logs, email_deliveries, webhook_deliveries, audit_log)',
  labelNames: ['table'] as const,
  registers: [registry],
});

const priorityOf = (job: Job) => priorityOfBull(job.opts.priority);

/** Observes a BullMQ worker's outcomes. A listener only: it never changes what the worker does. */
export function instrumentWorker(worker: Worker, type: string): void {
  const observe = (job: Job) => {
    const labels = { type, priority: priorityOf(job) };
    if (job.processedOn) {
      jobDuration.observe(labels, Math.max(0, (job.finishedOn ?? Date.now()) - job.processedOn) / 1000);
      // The first attempt only: later ones wait out a backoff, which is not queueing.
      if (job.attemptsMade <= 1)
        jobQueueWait.observe(labels, Math.max(0, job.processedOn - job.timestamp - (job.opts.delay ?? 0)) / 1000);
    }
  };
  worker.on('completed', (job) => {
    jobsCompleted.inc({ type });
    observe(job);
  });
  worker.on('failed', (job, err) => {
    if (!job) return;
    observe(job);
    if (err?.message === CANCELLED) return jobsCancelled.inc({ type });
    const final = err instanceof UnrecoverableError || job.attemptsMade >= (job.opts.attempts ?? 1);
    (final ? jobsFailed : jobRetries).inc({ type });
  });
  worker.on('stalled', () => jobsStalled.inc({ type }));
}

/** Queue depth per state, read from Redis when scraped. Registered once, by the process that owns queues. */
export function registerQueueDepth(source: () => { name: string; counts(): Promise<Record<string, number>> }[]): void {
  if (registry.getSingleMetric('queue_jobs')) registry.removeSingleMetric('queue_jobs');
  new Gauge({
    name: 'queue_jobs',
    help: 'Jobs in each queue per state (waiting includes prioritized), read from Redis at scrape time',
    labelNames: ['queue', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const queues = source();
      const all = await Promise.allSettled(queues.map((q) => q.counts()));
      all.forEach((r, i) => {
        if (r.status !== 'fulfilled') return;
        for (const [state, n] of Object.entries(r.value)) this.set({ queue: queues[i].name, state }, n);
      });
    },
  });
}

/**
 * Whether this process reaches PostgreSQL and Redis, probed when scraped (1 up, 0 down or slower than the timeout).
 * Registered once per process, with that process's own connections; the alert rules read it.
 */
export function registerDependencyProbes(probes: Record<string, () => Promise<unknown>>, timeoutMs = 2_000): void {
  if (registry.getSingleMetric('dependency_up')) registry.removeSingleMetric('dependency_up');
  new Gauge({
    name: 'dependency_up',
    help: 'Whether this process reaches each dependency (postgres, redis), probed at scrape time',
    labelNames: ['dependency'] as const,
    registers: [registry],
    async collect() {
      const results = await Promise.all(
        Object.entries(probes).map(async ([dependency, probe]) => {
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('timeout')), timeoutMs);
          });
          const up = await Promise.race([probe(), timeout]).then(
            () => 1,
            () => 0,
          );
          clearTimeout(timer);
          return [dependency, up] as const;
        }),
      );
      for (const [dependency, up] of results) this.set({ dependency }, up);
    },
  });
}

/** Counts API requests by route pattern (never the raw path, which would explode the label set). */
export function httpMetrics(): MiddlewareHandler {
  // The label children of each method × route × status, looked up by one string: prom-client would otherwise
  // hash a labels object twice per request.
  const children = new Map<string, { count: { inc(): void }; duration: { observe(v: number): void } }>();
  return async (c, next) => {
    const start = performance.now();
    try {
      await next();
    } finally {
      // The last matched route is the handler's pattern, even when a middleware answered first (a 401).
      const method = c.req.method;
      const route = routePath(c, -1) || 'unmatched';
      const status = c.res.status;
      const key = `${method} ${status} ${route}`;
      let child = children.get(key);
      if (!child) {
        const labels = { method, route, status: String(status) };
        child = { count: httpRequests.labels(labels), duration: httpDuration.labels(labels) };
        children.set(key, child);
      }
      child.count.inc();
      child.duration.observe((performance.now() - start) / 1000);
    }
  };
}

export async function metricsText(): Promise<{ body: string; contentType: string }> {
  return { body: await registry.metrics(), contentType: registry.contentType };
}

/**
 * The worker process's scrape endpoint. Port 0 picks a free port (tests; the log line says which).
 * A port in use (several workers on one host with the default) is logged and skipped: metrics never stop work.
 */
export async function startMetricsServer(
  port: number,
  host: string,
  log: Logger,
): Promise<{ port: number; close(): Promise<void> } | undefined> {
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      metricsText().then(
        ({ body, contentType }) => res.writeHead(200, { 'Content-Type': contentType }).end(body),
        (err) => {
          log.error({ err }, 'metrics collection failed');
          res.writeHead(500).end();
        },
      );
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('GET /metrics\n');
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  } catch (err) {
    log.warn({ err: (err as Error).message, port }, 'worker metrics port unavailable; this process exposes no metrics');
    return undefined;
  }
  const actual = (server.address() as AddressInfo).port;
  log.info({ metrics_port: actual, metrics_host: host }, `worker metrics on :${actual}/metrics`);
  return {
    port: actual,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
