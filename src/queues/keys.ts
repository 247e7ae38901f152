// Every Redis key and channel name the platform uses, BullMQ's prefixes included. All live under QUEUE_PREFIX, so
// several deployments (or test files) share one Redis without meeting.
import type { Config } from '../config.js';
import { isCluster } from './redis.js';

/**
 * BullMQ prefix of one queue. BullMQ's scripts touch many keys of a queue at once, so on a cluster they must share a
 * slot: the prefix is hash-tagged per queue (`{jobs:email}` → keys `{jobs:email}:email:*`), which keeps each queue in
 * one slot while different queues spread over the masters. A QUEUE_PREFIX that already has a `{tag}` is used as is
 * (every queue in that one slot: needed only if jobs of one queue must have parents in another, e.g. cross-queue flows).
 * On a single Redis the prefix is QUEUE_PREFIX unchanged.
 */
export function bullPrefix(config: Config, queue: string): string {
  const p = config.QUEUE_PREFIX;
  return isCluster(config) && !p.includes('{') ? `{${p}:${queue}}` : p;
}

/** Redis key and channel names the platform owns besides BullMQ's, all under the queue prefix. */
export function keys(config: Pick<Config, 'QUEUE_PREFIX'>) {
  const p = config.QUEUE_PREFIX;
  return {
    /** Pub/sub channel of every job's events (src/events.ts). */
    events: `${p}:job-events`,
    /** A job's recent events, a stream kept for replay (src/events.ts). */
    jobEvents: (jobId: string) => `${p}:job-events:${jobId}`,
    /** Pub/sub channel of cancel requests to the workers running a job. */
    cancel: `${p}:job-cancel`,
    /** Pub/sub channel of revoked API key ids (src/auth/revocation.ts). */
    keyRevoked: `${p}:key-revoked`,
    /** A console session, by the SHA-256 of its cookie (src/api/session.ts). */
    session: (idHash: string) => `${p}:session:${idHash}`,
    /** Prefix of one rate limiter's counters (src/api/rate-limit.ts). */
    rateLimit: (name: string) => `${p}:rl:${name}`,
    /** A user's stored recommendations; hash-tagged by tenant, so a pipeline over one tenant's users stays in one slot. */
    recommendations: (tenant: string, userId: string) => `${p}:reco:{${tenant}}:${encodeURIComponent(userId)}`,
    reconcilerLock: `${p}:reconciler-lock`,
    /** Where the last reconciler pass stopped; gone (first start, Redis wiped, or expired) means a full scan. */
    reconcilerHorizon: `${p}:reconciler-horizon`,
    webhookSweepLock: `${p}:webhook-sweep-lock`,
    /** Held by the worker whose expiry sweep is running (src/workers/expiry.ts). */
    expiryLock: `${p}:expiry-lock`,
  };
}
