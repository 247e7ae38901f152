// Accepting work: validate against the registry, commit ledger rows, then enqueue.
import { createHash } from 'node:crypto';
import { newId } from '../ids.js';
import { z } from 'zod';
import { isDbUnavailable } from '../errors.js';
import type { Services } from '../services.js';
import { type AdmittedRow, admissionPolicy, admit } from '../db/admission.js';
import * as ledger from '../db/jobs.js';
import type { JobRow, NewJobRow } from '../db/types.js';
import { type Priority, PRIORITIES } from '../domain.js';
import { groupCommit } from '../group-commit.js';
import { currentTraceContext, linksTo, withSpan } from '../tracing/index.js';
import { enqueue } from './enqueue.js';
import type { JobRegistry } from './registry.js';
import { timeLimits } from './types.js';
import { fieldIssues } from '../validation.js';

/** The longest `dedupe_key` accepted, in characters. */
export const DEDUPE_KEY_MAX = 200;

export const priority = z.enum(PRIORITIES);

export const jobSpec = z.strictObject({
  type: z.string().min(1).max(40),
  payload: z.record(z.string(), z.unknown()),
  priority: priority.default('normal'),
  run_at: z.iso.datetime({ offset: true }).optional(),
  callback_url: z
    .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
    .max(2048)
    .optional(),
  timeout_ms: z
    .number()
    .int()
    .positive()
    .optional()
    .meta({
      description:
        "Each run's time limit in ms, up to the type's maximum (else 422); the type's default when absent. Past it the " +
        'run is aborted and fails with error.code `timeout`, retried like any failure.',
    }),
  expires_at: z.iso
    .datetime({ offset: true })
    .optional()
    .meta({
      description:
        'A job not started by then never starts: it ends `cancelled` with error.code `expired`. Must be in the future ' +
        'and after run_at (else 422).',
    }),
  dedupe_key: z
    .string()
    .min(1)
    .max(DEDUPE_KEY_MAX)
    .refine((k) => !k.includes('\0'), 'must not contain the NUL character (\\u0000)')
    .optional()
    .meta({
      description:
        'While a job of this tenant with this key is queued, delayed or running, a submit answers that job (200, ' +
        '`Dedupe-Hit: true`) instead of creating one; once it ends, the key is free.',
    }),
});
export type JobSpec = z.infer<typeof jobSpec>;

/** What submitting needs of the process's services; without `config` (its admission settings) every job is admitted. */
export type SubmitDeps = Pick<Services, 'db' | 'queues' | 'registry' | 'log'> & Partial<Pick<Services, 'config'>>;

export type SpecIssue = { path: (string | number)[]; message: string; code: 'invalid' | 'unavailable' };

/** Checks a spec against its type: unknown type, a type not built yet, or a bad payload. */
export function checkSpec(
  registry: JobRegistry,
  spec: JobSpec,
): { row?: Omit<NewJobRow, 'id' | 'tenant'>; issues: SpecIssue[] } {
  const def = registry.get(spec.type);
  if (!def || def.internal) {
    const known = registry
      .all()
      .filter((d) => !d.internal)
      .map((d) => d.type);
    return { issues: [{ path: ['type'], message: `unknown job type; one of: ${known.join(', ')}`, code: 'invalid' }] };
  }
  if (!def.process) {
    return {
      issues: [
        {
          path: ['type'],
          message: `job type '${spec.type}' is not available yet on this platform`,
          code: 'unavailable',
        },
      ],
    };
  }
  const parsed = def.payload.safeParse(spec.payload);
  if (!parsed.success) {
    return {
      issues: fieldIssues(parsed.error.issues, ['payload']).map((i) => ({ ...i, code: 'invalid' as const })),
    };
  }
  const nul = nulPath(parsed.data);
  if (nul) {
    return {
      issues: [
        {
          path: ['payload', ...nul],
          message: 'must not contain the NUL character (\\u0000)',
          code: 'invalid' as const,
        },
      ],
    };
  }
  const runAt = spec.run_at ? new Date(spec.run_at) : null;
  return {
    issues: [],
    row: {
      type: spec.type,
      state: runAt && runAt.getTime() > Date.now() ? 'delayed' : 'queued',
      priority: spec.priority as Priority,
      payload: JSON.stringify(parsed.data),
      max_attempts: def.attempts,
      callback_url: spec.callback_url ?? null,
      run_at: runAt,
      timeout_ms: spec.timeout_ms ?? timeLimits(def).defaultMs,
      expires_at: spec.expires_at ? new Date(spec.expires_at) : null,
      dedupe_key: spec.dedupe_key ?? null,
    },
  };
}

/**
 * What the type's limits and the clock refuse in a spec that checkSpec accepted: a `timeout_ms` above the type's
 * maximum, an `expires_at` not in the future or not after `run_at`. Paths are relative to the spec.
 */
export function timeIssues(
  registry: JobRegistry,
  spec: JobSpec,
  now = Date.now(),
): { path: string[]; message: string }[] {
  const def = registry.get(spec.type);
  const issues: { path: string[]; message: string }[] = [];
  if (def && spec.timeout_ms !== undefined) {
    const { maxMs } = timeLimits(def);
    if (spec.timeout_ms > maxMs)
      issues.push({
        path: ['timeout_ms'],
        message: `must be at most ${maxMs} (the longest a ${def.type} job may run)`,
      });
  }
  if (spec.expires_at !== undefined) {
    const expires = new Date(spec.expires_at).getTime();
    if (expires <= now) issues.push({ path: ['expires_at'], message: 'must be in the future' });
    else if (spec.run_at !== undefined && expires <= new Date(spec.run_at).getTime())
      issues.push({ path: ['expires_at'], message: 'must be after run_at (the job could never start)' });
  }
  return issues;
}

/**
 * Where a NUL character (U+0000) is in a JSON value, key or string, or undefined. PostgreSQL's jsonb cannot store
 * one (22P05): it is refused here, as the client's error, before it can reach a statement shared with others.
 */
function nulPath(value: unknown, path: (string | number)[] = []): (string | number)[] | undefined {
  if (typeof value === 'string') return value.includes('\0') ? path : undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = nulPath(value[i], [...path, i]);
      if (found) return found;
    }
    return undefined;
  }
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k.includes('\0')) return [...path, k];
      const found = nulPath(v, [...path, k]);
      if (found) return found;
    }
  }
  return undefined;
}

export function requestHash(body: unknown): string {
  return createHash('sha256').update(JSON.stringify(body)).digest('base64url');
}

/**
 * Commits the rows, then adds the admitted ones to BullMQ (the others wait for their tenant's window: the admitter
 * adds them). An enqueue that fails after the commit is logged and left to the reconciler: the job is accepted
 * either way.
 */
export async function submit(
  deps: SubmitDeps,
  tenant: string,
  rows: Omit<NewJobRow, 'id' | 'tenant'>[],
  extra: Partial<NewJobRow> = {},
): Promise<JobRow[]> {
  return (await submitDeduped(deps, tenant, rows, extra)).jobs;
}

/**
 * submit, saying which rows a live job with the same dedupe_key answered (`deduplicated[i]`): those were not created,
 * and are not enqueued again (their job is already where it should be).
 */
export async function submitDeduped(
  deps: SubmitDeps,
  tenant: string,
  rows: Omit<NewJobRow, 'id' | 'tenant'>[],
  extra: Partial<NewJobRow> = {},
): Promise<{ jobs: JobRow[]; deduplicated: boolean[] }> {
  const input = rows.map((r) => ({ ...r, ...extra, id: newId(), tenant, trace_context: currentTraceContext() }));
  const jobs = await ledger.insertJobs(deps.db, input, policyOf(deps));
  const deduplicated = ledger.dedupeHits(input, jobs);
  const created = jobs.filter((_, i) => !deduplicated[i]);
  await enqueueOrLeave(deps, [...created.filter((r) => r.admitted_at), ...(await admitRechecks(deps, created))]);
  return { jobs, deduplicated };
}

/**
 * Rows the submit statement could not admit only because their window's bound was stale (see AdmittedRow): one
 * admission per (tenant, type) now, with a fresh count. Rare (a bound is refreshed whenever a tenant's jobs wait), so
 * the common submit stays one statement. Returns what it admitted, for BullMQ.
 */
async function admitRechecks(deps: SubmitDeps, rows: AdmittedRow[]): Promise<AdmittedRow[]> {
  const groups = new Map<string, { tenant: string; type: string; window: number; weight: number; n: number }>();
  for (const r of rows) {
    if (!r.admission_recheck) continue;
    const key = `${r.tenant}/${r.type}`;
    const g = groups.get(key) ?? {
      tenant: r.tenant,
      type: r.type,
      window: r.admission_window ?? 0,
      weight: r.admission_weight ?? 1,
      n: 0,
    };
    g.n++;
    groups.set(key, g);
  }
  const admitted: AdmittedRow[] = [];
  for (const g of groups.values()) {
    try {
      admitted.push(...(await admit(deps.db, g, g.n)));
    } catch (err) {
      // The jobs are committed; the admitter admits them at its next pass.
      deps.log.error({ err, tenant: g.tenant, type: g.type }, 'admission after submit failed; the admitter will admit');
    }
  }
  return admitted;
}

const policyOf = (deps: SubmitDeps) => (deps.config ? admissionPolicy(deps.config) : undefined);

/** Adds the rows to BullMQ; a failure is logged and left to the reconciler. Callers pass admitted rows only. */
export async function enqueueOrLeave(deps: SubmitDeps, rows: JobRow[]): Promise<void> {
  if (rows.length === 0) return;
  try {
    await enqueue(deps.queues, deps.registry, rows);
  } catch (err) {
    deps.log.error({ err, jobs: rows.length }, 'enqueue failed after commit; the reconciler will enqueue these jobs');
  }
}

/**
 * Single submissions from many concurrent requests, written as group commits: one multi-row INSERT and one BullMQ
 * addBulk per batch instead of a statement and a round trip per job. Each caller still gets its own row only after
 * that row is committed.
 */
export function groupSubmitter(deps: SubmitDeps) {
  // Requests parsed in the same turn of the event loop share a batch: without gathering, the first few callers of
  // each turn went out alone (a statement or a script each) while the rest waited for them.
  // A batch's span (in the trace of the request that opened it) links to the span of each job it carries. Rows of
  // many clients share one statement: one the database refuses (a value validation let through) is written again
  // alone, so it fails only its own request. A lost connection fails the batch at once.
  const policy = policyOf(deps);
  const insert = groupCommit(
    (rows: NewJobRow[]) =>
      withSpan(
        'jobs insert',
        { 'jobs.count': rows.length },
        () => ledger.insertJobs(deps.db, rows, policy),
        () => linksTo(rows.map((r) => r.trace_context)),
      ),
    { gather: 'turn', isolate: (err) => !isDbUnavailable(err) },
  );
  const add = groupCommit(
    async (rows: AdmittedRow[]) => {
      await enqueueOrLeave(deps, [...rows.filter((r) => r.admitted_at), ...(await admitRechecks(deps, rows))]);
      return rows;
    },
    { gather: 'turn' },
  );
  return (tenant: string, row: Omit<NewJobRow, 'id' | 'tenant'>): Promise<{ job: JobRow; deduplicated: boolean }> => {
    const id = newId();
    return withSpan('job submit', { 'job.id': id, 'job.type': row.type }, async () => {
      const job = await insert({ ...row, id, tenant, trace_context: currentTraceContext() });
      // A live job with the same dedupe_key answered: it was enqueued when it was created.
      if (job.id !== id) return { job, deduplicated: true };
      return { job: await add(job), deduplicated: false };
    });
  };
}
