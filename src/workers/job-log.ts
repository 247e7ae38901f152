// ctx.jobLog: the lines a processor keeps with its job. Each run buffers its lines and sends them in batches (every
// BATCH_LINES lines, FLUSH_MS after the first unsent one, and at the run's end); the batches of every run in the
// process share statements (group commit), so a line never costs a round trip of its own.
import type { Logger } from 'pino';
import type { Db } from '../db/index.js';
import { appendJobLogs, JOB_LOG_LIMITS, type JobLogLine } from '../db/job-logs.js';
import { isDbUnavailable } from '../errors.js';
import { groupCommit } from '../group-commit.js';

const BATCH_LINES = 50;
const FLUSH_MS = 1_000;

export interface RunLog {
  /** Keeps a line with the job: never throws, never waits. */
  line(message: string, fields?: Record<string, unknown>): void;
  /** Sends what is buffered and waits for every batch of this run; a failed write is logged, not thrown. */
  flush(): Promise<void>;
}

export function jobLogWriter(db: Db, log: Logger) {
  const write = groupCommit(
    async (batches: JobLogLine[][]) => {
      await appendJobLogs(db, batches.flat());
      return batches.map(() => undefined);
    },
    { maxInFlight: 1, isolate: (err) => !isDbUnavailable(err) },
  );

  return function forRun(jobId: string, gen: number): RunLog {
    let buffered: JobLogLine[] = [];
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    let tail: Promise<void> = Promise.resolve();

    const send = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      if (buffered.length === 0) return;
      const batch = buffered;
      buffered = [];
      sent += batch.length;
      tail = tail.then(() =>
        write(batch).catch((err) => log.warn({ err, job_id: jobId, lines: batch.length }, 'job log lines not kept')),
      );
    };

    return {
      line(message, fields) {
        // One line past the bound still goes, so the statement sees the overflow and writes its closing line.
        if (sent + buffered.length > JOB_LOG_LIMITS.lines) return;
        buffered.push({ job_id: jobId, gen, at: new Date(), message: String(message), fields });
        if (buffered.length >= BATCH_LINES) send();
        else timer ??= setTimeout(send, FLUSH_MS).unref();
      },
      async flush() {
        send();
        await tail;
      },
    };
  };
}
