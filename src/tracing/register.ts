// The tracing bootstrap, loaded before the entry point with `node --import tsx --import ./src/tracing/register.ts`,
// so the instrumentations hook `pg`, `ioredis` and `http` before anything loads them. Tracing is off (nothing is
// loaded or started) unless OTEL_EXPORTER_OTLP_ENDPOINT is set. The SDK reads the other standard OTEL_* variables
// itself (OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_TRACES_SAMPLER, OTEL_BSP_*, ...); only traces are exported (metrics are
// Prometheus's, see src/metrics.ts).
import { register } from 'node:module';
import path from 'node:path';
import { loadConfig, type Config } from '../config.js';
import { tracingStarted } from './index.js';

/** web, worker, or the entry file's name (cli, release): the default service name is `movie-jobs-<role>`. */
function role(entry: string | undefined): string {
  const file = entry ? path.resolve(entry) : '';
  if (/[/\\]api[/\\]server\.[jt]s$/.test(file)) return 'web';
  if (/[/\\]workers[/\\]main\.[jt]s$/.test(file)) return 'worker';
  return path.basename(file).replace(/\.[jt]s$/, '') || 'node';
}

let config: Config | undefined;
try {
  config = loadConfig();
} catch {
  // The entry point loads the config again and stops with the message naming the bad variable.
}

if (config?.OTEL_EXPORTER_OTLP_ENDPOINT) {
  // ESM imports of the instrumented modules go through import-in-the-middle's hook; only theirs, since hooking every
  // module the process loads doubles its start-up.
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url, {
    data: { include: ['pg', 'ioredis', 'http', 'https', 'node:http', 'node:https'] },
  });
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const { HttpInstrumentation } = await import('@opentelemetry/instrumentation-http');
  const { PgInstrumentation } = await import('@opentelemetry/instrumentation-pg');
  const { IORedisInstrumentation } = await import('@opentelemetry/instrumentation-ioredis');
  // Scrapes, health checks and dashboards' polling would be most of the traces and none of the interest.
  const quiet = /^\/(metrics|health|ready|admin)(\/|\?|$)/;
  const sdk = new NodeSDK({
    serviceName: config.OTEL_SERVICE_NAME ?? `movie-jobs-${role(process.argv[1])}`,
    instrumentations: [
      new HttpInstrumentation({ ignoreIncomingRequestHook: (req) => quiet.test(req.url ?? '') }),
      // Only work inside a trace (a request, a job's run): the workers' polling and the reconciler's passes
      // would otherwise each be a trace of their own.
      new PgInstrumentation({ requireParentSpan: true }),
      // The command name only: arguments carry job payloads and tenants' data.
      new IORedisInstrumentation({ requireParentSpan: true, dbStatementSerializer: (command) => command }),
    ],
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  tracingStarted(sdk);
}
