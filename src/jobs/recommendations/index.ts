/*
 * recommendations — payload {user_id, limit?} or {all_users: true}.
 * Side effects: a row in `recommendations` per user (upserted: a rerun overwrites) and its Redis cache entry.
 *   A batch adds one `recommendations-chunk` child job per RECO_CHUNK_USERS users (ledger rows with parent_id).
 * Result: {user_id, items: [{movie_id, title, score}], strategy, generated_at}; batch: {users, succeeded, failed, chunks}.
 *
 * recommendations-chunk — internal: payload {user_ids, limit}; only a batch creates it, the API refuses the type.
 *   Its own queue, so chunks never wait behind the batch parents that wait for them. Result {users, succeeded}.
 */
import { z } from 'zod';
import { defineJob } from '../registry.js';

export const userId = z.string().trim().min(1).max(128);

export const recommendationsPayload = z.union([
  z.strictObject({ user_id: userId, limit: z.number().int().min(1).max(100).default(10) }),
  z.strictObject({ all_users: z.literal(true) }),
]);

export const recommendations = defineJob({
  type: 'recommendations',
  description: 'Top-N movie recommendations for one user, or a batch over all users',
  payload: recommendationsPayload,
  attempts: 3,
  backoffMs: 2_000,
  concurrency: 4,
  // A batch over all users waits for its chunks.
  timeoutMs: 30 * 60_000,
  maxTimeoutMs: 6 * 3600_000,
  async process(ctx) {
    const { recommendUsers, runBatch } = await import('./service.js');
    if ('all_users' in ctx.payload) return runBatch(ctx, ctx.deps.config.RECO_CHUNK_USERS);
    const [result] = await recommendUsers(
      ctx.deps,
      ctx.tenant,
      ctx.id,
      [ctx.payload.user_id],
      ctx.payload.limit,
      ctx.signal,
      ctx.jobLog,
    );
    return result;
  },
});

const chunkPayload = z.strictObject({
  user_ids: z.array(userId).min(1).max(100_000),
  limit: z.number().int().min(1).max(100).default(10),
});

export const recommendationsChunk = defineJob({
  type: 'recommendations-chunk',
  description: 'Internal: one chunk of users of a recommendations batch',
  payload: chunkPayload,
  internal: true,
  attempts: 3,
  backoffMs: 2_000,
  // Scoring is CPU-bound and the model is shared: two chunks keep two cores busy while one waits on PostgreSQL.
  concurrency: 2,
  timeoutMs: 15 * 60_000,
  maxTimeoutMs: 60 * 60_000,
  async process(ctx) {
    const { recommendUsers } = await import('./service.js');
    await ctx.progress(5);
    const out = await recommendUsers(
      ctx.deps,
      ctx.tenant,
      ctx.id,
      ctx.payload.user_ids,
      ctx.payload.limit,
      ctx.signal,
      ctx.jobLog,
    );
    return { users: ctx.payload.user_ids.length, succeeded: out.length };
  },
});
