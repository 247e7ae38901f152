// The `recommendations` email's items when the payload does not carry them: the user's latest stored result.
// The recommendations table belongs to the recommender; this read is one primary-key lookup, tolerant of the table
// being absent (a deployment without the recommender) and of rows whose shape it does not expect.
import { sql } from 'kysely';
import { z } from 'zod';
import type { Db } from '../db/index.js';
import { recommendationItem, type RecommendationItem } from './render.js';

const MAX_ITEMS = 20;
const UNDEFINED_TABLE = '42P01';
const UNDEFINED_COLUMN = '42703';

export async function latestRecommendations(db: Db, tenant: string, userId: string): Promise<RecommendationItem[]> {
  let rows: { items: unknown }[];
  try {
    ({ rows } = await sql<{
      items: unknown;
    }>`select items from recommendations where tenant = ${tenant} and user_id = ${userId} limit 1`.execute(db));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === UNDEFINED_TABLE || code === UNDEFINED_COLUMN) return [];
    throw err;
  }
  const items = z.array(z.unknown()).safeParse(rows[0]?.items);
  if (!items.success) return [];
  // Keep the well-formed items, in stored order (best first), and no more than an email can show.
  return items.data
    .map((i) => recommendationItem.safeParse(i))
    .filter((r) => r.success)
    .map((r) => r.data)
    .slice(0, MAX_ITEMS);
}
