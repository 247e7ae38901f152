/*
 * recommendations — payload {user_id, limit?} or {all_users: true}.
 * Side effects: a row in `recommendations` per user (and the Redis cache of it).
 * Result: {user_id, items: [{movie_id, title, score}], strategy, generated_at}; batch: {users, succeeded, failed}.
 */
import { z } from 'zod';
import { defineJob } from './registry.js';

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
});
