// Status reads (GET /v1/jobs/:id) answered from memory while this process knows the job has not changed.
//
// Clients poll. Every change to a job is published as a job event, and this process's event hub receives all of
// them; an event drops the job's entry, so the next read goes to the ledger. An entry also lapses after `ttlMs`,
// which bounds how stale an answer can be if a change was written without an event (a publish lost while Redis
// failed over, a hand edit in SQL); a job still being polled is read again in the background in the last quarter of
// that time, so its readers do not wait. While the hub is not receiving (its connection dropped) nothing is cached
// or served from here. Ledger reads are batched: one primary-key lookup per turn of the event loop.
import type { JobRow } from '../db/types.js';
import { toApiJob } from '../db/jobs.js';
import type { ApiJob } from '../jobs/api-job.js';
import { groupCommit } from '../group-commit.js';
import type { EventHub } from './event-hub.js';

interface Entry {
  job: ApiJob;
  /** Its size as JSON, for the memory bound. */
  chars: number;
  /** When it lapses: ttlMs after it was read, less up to a fifth, so entries read together do not all lapse together. */
  until: number;
  /** From then on a read still answers from it but also reads the ledger again in the background (once). */
  refreshAt: number;
  refreshing?: boolean;
}

export class JobCache {
  private readonly entries = new Map<string, Entry>();
  private chars = 0;
  /** Ids being read from the ledger, and whether an event for them arrived meanwhile (the read may be older). */
  private readonly reading = new Map<string, boolean>();
  private readonly load: (id: string) => Promise<ApiJob | undefined>;

  constructor(
    private readonly hub: EventHub | undefined,
    read: (ids: string[]) => Promise<JobRow[]>,
    private readonly ttlMs: number,
    private readonly maxChars = 32 * 1024 * 1024,
  ) {
    hub?.watch({ change: (id) => this.changed(id), gap: () => this.clear() });
    this.load = groupCommit(
      async (ids: string[]) => {
        for (const id of ids) this.reading.set(id, false);
        try {
          const byId = new Map((await read(ids)).map((r) => [r.id, r]));
          return ids.map((id) => {
            const row = byId.get(id);
            if (!row) return undefined;
            const job = toApiJob(row);
            if (this.reading.get(id) === false) this.put(id, job);
            return job;
          });
        } finally {
          for (const id of ids) this.reading.delete(id);
        }
      },
      // Small batches keep the tail shorter than large ones (docs/performance.md, "Figures behind the code").
      { gather: 'turn', maxInFlight: 2, maxBatch: 16 },
    );
  }

  /** The job, from memory if it is there and current, else from the ledger. */
  async get(id: string): Promise<ApiJob | undefined> {
    const e = this.entries.get(id);
    if (e) {
      const now = Date.now();
      if (now < e.until && this.usable()) {
        // A job still being polled is read again before its entry lapses, so its readers never wait for the ledger.
        if (now >= e.refreshAt && !e.refreshing) {
          e.refreshing = true;
          this.load(id).catch(() => {});
        }
        return e.job;
      }
      this.drop(id);
    }
    return this.load(id);
  }

  private usable(): boolean {
    return this.ttlMs > 0 && this.hub?.receiving === true;
  }

  private put(id: string, job: ApiJob) {
    if (!this.usable()) return;
    this.drop(id);
    const chars = JSON.stringify(job).length;
    if (chars > this.maxChars / 100) return;
    const now = Date.now();
    const until = now + this.ttlMs * (1 - Math.random() / 5);
    this.entries.set(id, { job, chars, until, refreshAt: until - this.ttlMs / 4 });
    this.chars += chars;
    // Oldest first (a Map iterates in insertion order) until the bodies fit.
    for (const [old] of this.entries) {
      if (this.chars <= this.maxChars) break;
      this.drop(old);
    }
  }

  private drop(id: string) {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    this.chars -= e.chars;
  }

  /** This process changed the job: the next read goes to the ledger (its own event would come back a little later). */
  forget(id: string) {
    this.changed(id);
  }

  private changed(id: string) {
    this.drop(id);
    if (this.reading.has(id)) this.reading.set(id, true);
  }

  private clear() {
    this.entries.clear();
    this.chars = 0;
    for (const id of this.reading.keys()) this.reading.set(id, true);
  }
}
