// Job changes published on Redis pub/sub, for live streams (SSE) in any API process.
import type { Config } from './config.js';
import { toApiJob, type ApiJob } from './db/jobs.js';
import type { JobRow } from './db/types.js';
import { keys, type RedisClient } from './queues.js';

export type JobEventKind = 'state' | 'progress';

export interface JobEvent {
  event: JobEventKind;
  job: ApiJob;
}

/** Publishes a change; a lost publish only delays a live view (the ledger has the truth), so errors are swallowed. */
export async function publishJobEvent(redis: RedisClient, config: Config, event: JobEventKind, row: JobRow): Promise<void> {
  const message: JobEvent = { event, job: toApiJob(row) };
  await redis.publish(keys(config).events, JSON.stringify(message)).catch(() => {});
}
