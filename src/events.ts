// Job changes published on Redis pub/sub, for live streams (SSE) in any API process.
//
// Each change is also appended to a short per-job Redis stream (capped, expiring), in the same script as the
// publish, so the two agree on order and on the event id. The stream lets a client that reconnects with
// Last-Event-ID replay what it missed, and lets an API process catch up after its subscriber reconnects.
import type { Config } from './config.js';
import { toApiJob } from './db/jobs.js';
import type { ApiJob } from './jobs/api-job.js';
import type { JobRow } from './db/types.js';
import { keys } from './queues/keys.js';
import { isCluster, type RedisClient } from './queues/redis.js';

export type JobEventKind = 'state' | 'progress';

export interface JobEvent {
  event: JobEventKind;
  job: ApiJob;
  /** The id of the event in the job's stream ("<ms>-<seq>"), usable as an SSE id. */
  id?: string;
}

/** A job's events are kept this long after its last change, for replay. */
const EVENT_TTL_MS = 60 * 60 * 1000;
/** At most about this many events per job (a job reports at most 101 progress values per run). */
const EVENT_MAXLEN = 500;

// One round trip on the worker's hot path: append, refresh the TTL, publish `{"id":…,` + the event's JSON.
const PUBLISH = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], '{"id":"' .. id .. '",' .. string.sub(ARGV[2], 2))
return id`;

// Many changes in one round trip (the worker's group commits): the same three commands per event, in order. A socket
// write per event costs more on the worker than the script does on Redis.
const PUBLISH_MANY = `
for i = 1, #KEYS do
  local message = ARGV[i + 3]
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'e', message)
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
  redis.call('PUBLISH', ARGV[3], '{"id":"' .. id .. '",' .. string.sub(message, 2))
end
return #KEYS`;

type Publisher = RedisClient & {
  publishJobEvent(key: string, maxLen: number, message: string, ttlMs: number, channel: string): Promise<string>;
  publishJobEvents(numKeys: number, ...args: (string | number)[]): Promise<number>;
};
const withScript = new WeakSet<object>();

/** The client with the script defined: ioredis sends it by SHA (EVALSHA), not its whole text each time. */
function publisher(redis: RedisClient): Publisher {
  if (!withScript.has(redis)) {
    redis.defineCommand('publishJobEvent', { numberOfKeys: 1, lua: PUBLISH });
    redis.defineCommand('publishJobEvents', { lua: PUBLISH_MANY });
    withScript.add(redis);
  }
  return redis as Publisher;
}

/** Publishes a change; a lost publish only delays a live view (the ledger has the truth), so errors are swallowed. */
export async function publishJobEvent(
  redis: RedisClient,
  config: Config,
  event: JobEventKind,
  row: JobRow,
): Promise<void> {
  const message: JobEvent = { event, job: toApiJob(row) };
  await publisher(redis)
    .publishJobEvent(
      keys(config).jobEvents(row.id),
      EVENT_MAXLEN,
      JSON.stringify(message),
      EVENT_TTL_MS,
      keys(config).events,
    )
    .catch(() => {});
}

/**
 * Publishes several changes, in the given order, in one round trip. On a Redis Cluster the jobs' stream keys live in
 * different slots, which one script may not touch, so there each change goes on its own. Errors are swallowed, as
 * for one change.
 */
export async function publishJobEvents(
  redis: RedisClient,
  config: Config,
  events: readonly { kind: JobEventKind; row: JobRow }[],
): Promise<void> {
  if (events.length === 0) return;
  if (events.length === 1 || isCluster(config)) {
    await Promise.all(events.map((e) => publishJobEvent(redis, config, e.kind, e.row)));
    return;
  }
  const keyList: string[] = [];
  const messages: string[] = [];
  for (const { kind, row } of events) {
    keyList.push(keys(config).jobEvents(row.id));
    messages.push(JSON.stringify({ event: kind, job: toApiJob(row) } satisfies JobEvent));
  }
  await publisher(redis)
    .publishJobEvents(keyList.length, ...keyList, EVENT_MAXLEN, EVENT_TTL_MS, keys(config).events, ...messages)
    .catch(() => {});
}

/** Events of a job after `afterId` (exclusive; "0" for all), oldest first. */
export async function readJobEvents(
  redis: RedisClient,
  config: Config,
  jobId: string,
  afterId: string,
): Promise<JobEvent[]> {
  const entries = await redis.xrange(keys(config).jobEvents(jobId), `(${afterId}`, '+');
  return entries.map(([id, fields]) => ({ ...(JSON.parse(fields[1]) as JobEvent), id }));
}

/** The id of a job's latest event, or "0-0" when it has none (yet, or any more). */
export async function lastJobEventId(redis: RedisClient, config: Config, jobId: string): Promise<string> {
  const [last] = await redis.xrevrange(keys(config).jobEvents(jobId), '+', '-', 'COUNT', 1);
  return last?.[0] ?? '0-0';
}

const EVENT_ID = /^(\d{1,20})-(\d{1,20})$/;

export function isEventId(value: string | undefined): value is string {
  return value !== undefined && EVENT_ID.test(value);
}

/** Orders stream ids ("<ms>-<seq>"): negative, zero or positive like a comparator. */
export function compareEventIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am === bm ? (as === bs ? 0 : as < bs ? -1 : 1) : am < bm ? -1 : 1;
}
