// Group commit: calls that arrive while a batch is being written are written together in the next batch.
// One multi-row statement costs little more than a single-row one, so under load this multiplies throughput;
// with no load every call goes out at once, alone, so it adds no latency.

export interface GroupCommitOptions {
  /** Items per write, at most. */
  maxBatch?: number;
  /** Writes under way at once; calls beyond gather into the next batch. */
  maxInFlight?: number;
  /**
   * 'turn': a call that finds a write slot free still waits for the rest of this turn of the event loop
   * (setImmediate), so callers woken together (a batch of jobs resuming after the same reply) share one write instead
   * of the first going alone. Costs at most one turn of latency. Default 'none': a free slot writes at once.
   */
  gather?: 'none' | 'turn';
  /**
   * A batch of several items whose write fails with an error this accepts is written again one item at a time, so an
   * item the write refuses (a value the database rejects) fails only its own caller. Errors it refuses (a lost
   * connection: every item would fail alike) fail the whole batch at once. Default: no retry, the batch fails.
   */
  isolate?: (err: unknown) => boolean;
}

export function groupCommit<T, R>(write: (items: T[]) => Promise<R[]>, opts: GroupCommitOptions = {}) {
  const maxBatch = opts.maxBatch ?? 500;
  const maxInFlight = opts.maxInFlight ?? 4;
  const gatherTurn = opts.gather === 'turn';
  let waiting: { item: T; resolve: (r: R) => void; reject: (e: unknown) => void }[] = [];
  let inFlight = 0;
  let scheduled = false;

  const flush = () => {
    while (inFlight < maxInFlight && waiting.length) {
      const batch = waiting.slice(0, maxBatch);
      waiting = waiting.slice(batch.length);
      inFlight++;
      write(batch.map((b) => b.item))
        .then(
          (out) => batch.forEach((b, i) => b.resolve(out[i])),
          async (err) => {
            if (!(batch.length > 1 && opts.isolate?.(err))) return batch.forEach((b) => b.reject(err));
            for (const b of batch) await write([b.item]).then((out) => b.resolve(out[0]), b.reject);
          },
        )
        .finally(() => {
          inFlight--;
          flush();
        });
    }
  };

  const flushLater = () => {
    scheduled = false;
    flush();
  };

  return (item: T): Promise<R> =>
    new Promise<R>((resolve, reject) => {
      waiting.push({ item, resolve, reject });
      if (!gatherTurn) flush();
      else if (!scheduled && inFlight < maxInFlight) {
        scheduled = true;
        setImmediate(flushLater);
      }
    });
}
