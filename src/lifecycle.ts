import type { Logger } from 'pino';
import { flushTracing } from './tracing/index.js';

/**
 * Runs `stop` once on SIGINT/SIGTERM, then exits; a second signal exits at once, and so does a `stop` still not done
 * after `deadlineMs`: whatever hangs (a pool's end waiting for a client that never comes back) must not keep a
 * stopping process alive.
 */
export function onShutdown(log: Logger, stop: () => Promise<void>, deadlineMs: number): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    setTimeout(() => {
      log.warn({ deadline_ms: deadlineMs }, 'shutdown still not done by its deadline; exiting now');
      process.exit(1);
    }, deadlineMs).unref();
    stop()
      // Spans still buffered are exported before the exit (nothing to do when tracing is off).
      .then(flushTracing)
      .then(() => {
        log.info('stopped');
        process.exit(0);
      })
      .catch((err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

/** A crash in a stray callback is logged; the process keeps serving (jobs and requests own their errors). */
export function logStrayErrors(log: Logger): void {
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
}
