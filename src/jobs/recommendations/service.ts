// What the recommendation jobs do: score users with the tenant's shared model, store, cache; fan a batch out.
import type { Services } from '../../services.js';
import type { RecommendationItem } from '../../db/types.js';
import { childrenOf, markCancelled } from '../../db/jobs.js';
import { TERMINAL, WAITING } from '../../domain.js';
import { enqueueOrLeave, submit } from '../submit.js';
import { RunTimeout } from '../../errors.js';
import type { JobContext } from '../types.js';
import { cacheResults, modelCache } from './cache.js';
import { allUsers, storeResults, userRatings, type StoredResult } from './data.js';

const CHUNK_TYPE = 'recommendations-chunk';

export interface UserResult {
  user_id: string;
  items: RecommendationItem[];
  strategy: string;
  generated_at: string;
}

/** Scores, stores (PostgreSQL) and caches (Redis) the results of some users. Safe to run twice: it upserts. */
export async function recommendUsers(
  deps: Services,
  tenant: string,
  jobId: string,
  userIds: string[],
  limit: number,
  signal?: AbortSignal,
  jobLog?: JobContext<unknown>['jobLog'],
): Promise<UserResult[]> {
  const { model, scorer } = await modelCache(deps.db, deps.config, deps.log).get(tenant, signal);
  const { readAt, byUser } = await userRatings(deps.db, tenant, userIds);
  const results: StoredResult[] = userIds.map((user_id) => {
    const rec = scorer.recommend(byUser.get(user_id) ?? [], limit);
    return {
      user_id,
      strategy: rec.strategy,
      model_version: model.version,
      items: rec.items.map((x) => ({
        movie_id: model.movies[x.movie].id,
        title: model.movies[x.movie].title,
        score: Math.round(x.score * 10_000) / 10_000,
      })),
    };
  });
  signal?.throwIfAborted();
  const strategies: Record<string, number> = {};
  for (const r of results) strategies[r.strategy] = (strategies[r.strategy] ?? 0) + 1;
  jobLog?.(`scored ${results.length} users with model v${model.version}`, {
    strategies,
    model_version: model.version,
    model_age_ms: Date.now() - model.builtAt,
  });
  const stored = await storeResults(deps.db, tenant, jobId, readAt, results);
  const fresh = new Set(stored.filter((s) => !s.stale).map((s) => s.user_id));
  const generated_at = readAt.toISOString();
  const out = results.map((r) => ({ user_id: r.user_id, items: r.items, strategy: r.strategy, generated_at }));
  // The cache is a convenience: the result is in PostgreSQL already, so a Redis hiccup must not fail the job.
  await cacheResults(
    deps.redis,
    deps.config,
    tenant,
    out.filter((r) => fresh.has(r.user_id)).map((r) => ({ ...r, job_id: jobId })),
  ).catch((err) => deps.log.warn({ err: String(err), tenant }, 'caching recommendations in Redis failed'));
  return out;
}

export interface BatchResult {
  users: number;
  succeeded: number;
  failed: number;
  chunks: number;
}

/**
 * `{all_users: true}`: one child job per chunk of users, each a ledger row with parent_id = this job, then wait for
 * them all while reporting progress. A rerun (the worker died) finds its children in the ledger and waits for those,
 * rather than creating a second set. The chunks' model is trained once, by whichever chunk asks first per process.
 */
export async function runBatch(ctx: JobContext<unknown>, chunkSize: number, pollMs = 250): Promise<BatchResult> {
  const { db } = ctx.deps;
  const children = () => childrenOf(db, ctx.id, ctx.tenant);
  let rows = await children();
  if (rows.length > 0) {
    // A rerun (the first run's worker died): it may have died between committing the chunks and enqueueing them.
    // Adding a BullMQ job whose id exists is a no-op, so re-adding every admitted chunk still waiting is safe (the
    // others wait for the admitter).
    const waiting = (await childrenOf(db, ctx.id, ctx.tenant, WAITING)).filter((c) => c.admitted_at);
    await enqueueOrLeave(ctx.deps, waiting);
  } else {
    const users = await allUsers(db, ctx.tenant);
    if (users.length === 0) return { users: 0, succeeded: 0, failed: 0, chunks: 0 };
    const def = ctx.deps.registry.get(CHUNK_TYPE)!;
    const specs = [];
    for (let i = 0; i < users.length; i += chunkSize) {
      specs.push({
        type: CHUNK_TYPE,
        state: 'queued' as const,
        priority: 'normal' as const,
        payload: JSON.stringify({ user_ids: users.slice(i, i + chunkSize), limit: 10 }),
        max_attempts: def.attempts,
      });
    }
    await submit(ctx.deps, ctx.tenant, specs, { parent_id: ctx.id });
    rows = await children();
  }
  // A fleet started with QUEUES=recommendations alone would leave the chunks waiting: say so where operators look.
  const chunkWorkers = await ctx.deps.queues
    .get(CHUNK_TYPE)
    .getWorkersCount()
    .catch(() => -1);
  if (chunkWorkers === 0)
    ctx.log.error(`no worker serves the ${CHUNK_TYPE} queue; this batch waits until one does (add it to QUEUES)`);
  let lastDone = -1;
  for (;;) {
    const done = rows.filter((r) => TERMINAL.includes(r.state)).length;
    if (done !== lastDone) {
      lastDone = done;
      await ctx.progress((done / rows.length) * 100);
    }
    if (done === rows.length) break;
    // Past its time limit the batch only stops waiting: its chunks go on, and its next attempt waits for them.
    if (ctx.signal.reason instanceof RunTimeout) ctx.signal.throwIfAborted();
    if (ctx.signal.aborted) {
      // Cancelling the batch cancels the chunks that have not started; running ones finish (they are idempotent).
      for (const r of rows.filter((x) => x.state === 'queued' || x.state === 'delayed')) {
        if (await markCancelled(db, r.id, WAITING))
          await ctx.deps.queues
            .get(CHUNK_TYPE)
            .remove(r.id)
            .catch(() => 0);
      }
      ctx.signal.throwIfAborted();
    }
    await new Promise((r) => setTimeout(r, pollMs));
    rows = await children();
  }
  let users = 0;
  let succeeded = 0;
  for (const r of rows) {
    const n = (r.payload as { user_ids: string[] }).user_ids.length;
    users += n;
    if (r.state === 'succeeded') succeeded += (r.result as { succeeded?: number } | null)?.succeeded ?? n;
  }
  return { users, succeeded, failed: users - succeeded, chunks: rows.length };
}
