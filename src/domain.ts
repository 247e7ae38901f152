// The platform's domain terms, each spelled out once: the TypeScript types, the zod enums of the API and the console,
// the client's types and the ledger's state sets are all derived from these arrays. Imports nothing, so the client
// (src/client/index.ts) may load it at run time without loading any of the server.
//
// The SQL keeps its own copies where a literal list is part of a statement's text (the CHECK constraint of
// migrations/2026-11-22T0100_core.ts, partial indexes and the queries that must match their predicates).

/** A job's states in the ledger (jobs.state), live ones first; reports list states in this order. */
export const JOB_STATES = ['queued', 'delayed', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

/** States a job never leaves (short of an explicit retry). */
export const TERMINAL: readonly JobState[] = ['succeeded', 'failed', 'cancelled'] satisfies JobState[];
/** States of a job that will still run or is running: every state that is not terminal. */
export const LIVE: readonly JobState[] = JOB_STATES.filter((s) => !TERMINAL.includes(s));
/** Live and not started: what a cancel ends at once, and what expiry and admission look at. */
export const WAITING: readonly JobState[] = ['queued', 'delayed'];

/** A job's priority, as the API accepts it; `normal` when not given. */
export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

/** BullMQ priorities of jobs enqueued before admission ranks (still read back by metrics). */
const LEGACY_BULL_PRIORITY: Readonly<Record<Priority, number>> = { high: 1, normal: 5, low: 10 };
const RANKED_BASE = 16;
/** BullMQ accepts priorities up to 2^21. */
const MAX_RANK = 600_000;

/**
 * A job's BullMQ priority (lower runs first): its priority class first (high, normal, low, as before admission), then
 * its admission rank: its place in its tenant's window when admitted, divided by the tenant's weight
 * (src/db/admission.ts). So within a class a quiet tenant's job (rank 1) goes ahead of a flooding tenant's (rank about
 * its window) already waiting in BullMQ, and two flooding tenants interleave by weight. A row enqueued without a rank
 * (the reconciler's re-enqueue, admission off) has rank 0: first in its class, as before admission.
 */
export function bullPriority(p: Priority, rank = 0): number {
  return RANKED_BASE + PRIORITIES.indexOf(p) * (MAX_RANK + 1) + Math.min(Math.max(0, Math.floor(rank)), MAX_RANK);
}

/** The priority class of a BullMQ priority (either encoding). */
export function priorityOfBull(n: number | undefined): Priority {
  if (n === undefined || n < RANKED_BASE) return PRIORITIES.find((c) => LEGACY_BULL_PRIORITY[c] === n) ?? 'normal';
  return PRIORITIES[Math.min(2, Math.floor((n - RANKED_BASE) / (MAX_RANK + 1)))];
}

/** What an API key may do: `client` its tenant's jobs, `operator` everything, `viewer` read what operators read. */
export const ROLES = ['client', 'operator', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

/** What an audit entry is about (audit_log.target_kind). */
export const AUDIT_TARGET_KINDS = ['queue', 'job', 'schedule', 'dashboard', 'tenant'] as const;
export type AuditTargetKind = (typeof AUDIT_TARGET_KINDS)[number];

/** From where an audited action came (audit_log.surface). */
export const AUDIT_SURFACES = ['api', 'console', 'dashboard', 'schedule', 'cli'] as const;
export type AuditSurface = (typeof AUDIT_SURFACES)[number];

/** How one try of a webhook delivery ended (webhook_deliveries.outcome). */
export const WEBHOOK_OUTCOMES = ['delivered', 'failed', 'refused'] as const;
export type WebhookOutcome = (typeof WEBHOOK_OUTCOMES)[number];
