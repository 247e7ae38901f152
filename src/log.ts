import { pino, type Logger } from 'pino';
import type { Config } from './config.js';

/**
 * Pretty one-line logs for a person at a terminal, JSON lines everywhere else. `npm start` runs processes under
 * foreman, whose pipes hide the terminal from them, so src/stack.ts decides and passes LOG_FORMAT down.
 */
export function prettyLogs(config: Pick<Config, 'LOG_FORMAT'>): boolean {
  return (config.LOG_FORMAT ?? (process.stdout.isTTY ? 'pretty' : 'json')) === 'pretty';
}

/**
 * What `npm start` passes to the processes it runs: their output goes through foreman's pipes, so the choice is made
 * here, from the terminal `npm start` itself writes to (an explicit LOG_FORMAT wins). Colour is forced because the
 * pipe would turn it off and the lines end up on that terminal.
 */
export function logEnvForChildren(config: Pick<Config, 'LOG_FORMAT'>, stdoutIsTTY: boolean): Record<string, string> {
  const format = config.LOG_FORMAT ?? (stdoutIsTTY ? 'pretty' : 'json');
  return format === 'pretty' ? { LOG_FORMAT: 'pretty', FORCE_COLOR: '1' } : { LOG_FORMAT: 'json' };
}

/** Structured logs; secrets are redacted wherever they might appear. */
export function createLogger(config: Config, name: string): Logger {
  return pino(
    {
      name,
      level: config.LOG_LEVEL,
      base: { pid: process.pid, process: name },
      redact: {
        paths: [
          'req.headers.authorization',
          'headers.authorization',
          'authorization',
          'key',
          'webhook_secret',
          'password',
          '*.password',
        ],
        censor: '[redacted]',
      },
      // pino-pretty runs in pino's transport thread, off the event loop of requests and jobs.
      ...(prettyLogs(config)
        ? {
            transport: {
              target: 'pino-pretty',
              options: { translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname,process', singleLine: true },
            },
          }
        : {}),
    },
    // JSON lines are written to stdout as they are logged (a write(2) each; few lines are at info). Not pino's default
    // asynchronous stream: that one flushes synchronously on exit, and when nothing reads stdout any more (a
    // supervisor that died or stopped first) the flush retries its EPIPE for ever and the process never exits. Written
    // synchronously, an EPIPE only switches the logger off (test/shutdown-timeout.test.ts).
    prettyLogs(config) ? undefined : pino.destination({ dest: 1, sync: true }),
  );
}
