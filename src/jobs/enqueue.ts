// The second half of the dual write: ledger rows → BullMQ jobs whose id is the ledger id.
import type { JobsOptions } from 'bullmq';
import type { AdmittedRow } from '../db/admission.js';
import type { JobRow } from '../db/types.js';
import { bullPriority } from '../domain.js';
import { RETENTION, type Queues } from '../queues/index.js';
import { inTraceOf } from '../tracing/index.js';
import type { JobRegistry } from './registry.js';

/**
 * BullMQ carries only the ledger id and type, the tenant, and the generation the job was queued as (`gen`, the run
 * identity every ledger write of the run is fenced on); the payload is read from the ledger (pass ids, not records),
 * except for job types whose runs start without waiting for the ledger (`startBehind`): BullMQ carries theirs.
 */
export interface BullData {
  tenant: string;
  gen: number;
  payload?: unknown;
}

/** What a row's BullMQ job carries. */
function bullData(row: JobRow, registry?: JobRegistry): BullData {
  if (registry?.get(row.type)?.startBehind) return { tenant: row.tenant, gen: row.generation, payload: row.payload };
  return { tenant: row.tenant, gen: row.generation };
}

/** The generation a BullMQ job was queued as; a job queued before generations existed is generation 0. */
export function genOf(data: Partial<BullData> | null | undefined): number {
  return typeof data?.gen === 'number' ? data.gen : 0;
}

function bullOptions(registry: JobRegistry, row: AdmittedRow): JobsOptions {
  const def = registry.get(row.type);
  const delay = row.run_at ? Math.max(0, row.run_at.getTime() - Date.now()) : 0;
  return {
    jobId: row.id,
    priority: bullPriority(row.priority, row.admission_rank ?? 0),
    delay: delay || undefined,
    attempts: Math.max(1, row.max_attempts - row.attempts),
    backoff: { type: 'exponential', delay: def?.backoffMs ?? 1_000, jitter: 0.5 },
    ...RETENTION,
    // The worker's `process` span continues the job's own trace, whoever enqueues it (BullMQ's telemetry format).
    ...(row.trace_context ? { telemetry: { metadata: row.trace_context } } : {}),
  };
}

/** Adds the rows' BullMQ jobs. A job id already in Redis is left as it is, so a repeat is a no-op. */
export async function enqueue(queues: Queues, registry: JobRegistry, rows: JobRow[]): Promise<void> {
  const byType = new Map<string, JobRow[]>();
  for (const r of rows) byType.set(r.type, [...(byType.get(r.type) ?? []), r]);
  await Promise.all(
    [...byType].map(([type, list]) => {
      const queue = queues.get(type);
      if (list.length === 1) {
        const r = list[0];
        // BullMQ's `add` stores its own span's context in the job: started in the job's trace, that span belongs there.
        return inTraceOf(r.trace_context, () => queue.add(type, bullData(r, registry), bullOptions(registry, r)));
      }
      return queue.addBulk(
        list.map((r) => ({ name: type, data: bullData(r, registry), opts: bullOptions(registry, r) })),
      );
    }),
  );
}
