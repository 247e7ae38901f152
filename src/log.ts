import { pino, type Logger } from 'pino';
import type { Config } from './config.js';

/** Structured JSON logs; secrets are redacted wherever they might appear. */
export function createLogger(config: Config, name: string): Logger {
  return pino({
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
  });
}
