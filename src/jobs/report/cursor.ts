// Rows of a report query, fetched in batches from a server-side cursor, so no result is ever whole in memory.
import { CompiledQuery, sql } from 'kysely';
import type { Db } from '../../db/index.js';
import { PermanentError } from '../../errors.js';

export interface CursorOptions {
  /** PostgreSQL statement_timeout for each statement of the report (the heavy one is the first FETCH). */
  timeoutMs: number;
  batchSize?: number;
  /** Aborting cancels the running statement on the server, not just the loop. */
  signal?: AbortSignal;
}

const QUERY_CANCELED = '57014';

/**
 * Yields the query's rows. A read-only transaction holds the cursor; leaving the loop early (break, throw)
 * closes it. A statement that outlives `timeoutMs` ends the report with `report_timeout`: the same range
 * would time out again, so retrying it would only load the database three times over.
 */
export async function* cursorRows<R>(db: Db, compiled: CompiledQuery<R>, opts: CursorOptions): AsyncGenerator<R> {
  const batch = opts.batchSize ?? 1_000;
  opts.signal?.throwIfAborted();
  const trx = await db.startTransaction().setAccessMode('read only').execute();
  let busy = false;
  let pid: number | undefined;
  // Cancels only while one of our statements runs, so a pooled connection's next user is never hit.
  const onAbort = () => {
    if (busy && pid) void sql`select pg_cancel_backend(${pid})`.execute(db).catch(() => {});
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const run = async <T>(q: CompiledQuery): Promise<T[]> => {
    busy = true;
    try {
      return (await trx.executeQuery<T>(q)).rows;
    } finally {
      busy = false;
    }
  };
  let done = false;
  try {
    const [setup] = await run<{ pid: number }>(
      CompiledQuery.raw(`select pg_backend_pid() as pid, set_config('statement_timeout', $1, true)`, [
        String(opts.timeoutMs),
      ]),
    );
    pid = setup.pid;
    await run(CompiledQuery.raw(`declare report_rows no scroll cursor for ${compiled.sql}`, [...compiled.parameters]));
    const fetch = CompiledQuery.raw(`fetch ${batch} from report_rows`);
    for (;;) {
      opts.signal?.throwIfAborted();
      const rows = await run<R>(fetch);
      for (const row of rows) yield row;
      if (rows.length < batch) break;
    }
    done = true;
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? err;
    if ((err as { code?: string }).code === QUERY_CANCELED) {
      throw new PermanentError(
        'report_timeout',
        `a report query ran longer than ${opts.timeoutMs} ms; ask for a shorter period`,
      );
    }
    throw err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (done) await trx.commit().execute();
    else
      await trx
        .rollback()
        .execute()
        .catch(() => {});
  }
}
