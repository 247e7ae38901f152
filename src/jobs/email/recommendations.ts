// The `recommendations` email's items when the payload does not carry them: the user's latest stored result; and
// what a reader wants to see of each (year, genres from the tenant's catalog) instead of the model's scores.
// The recommendations table belongs to the recommender; this read is one primary-key lookup, tolerant of the table
// being absent (a deployment without the recommender) and of rows whose shape it does not expect.
import { sql } from 'kysely';
import { z } from 'zod';
import type { Db } from '../../db/index.js';
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

/** A recommended movie as the email shows it: its title and, from the catalog, its year and genres. */
export interface MovieLine {
  title: string;
  /** "1979 · Horror, Sci-Fi"; empty when the catalog does not know the movie. */
  details: string;
}

/** The items with their year and genres, in one lookup of the tenant's catalog for all of them. */
export async function movieLines(db: Db, tenant: string, items: RecommendationItem[]): Promise<MovieLine[]> {
  const ids = [...new Set(items.flatMap((i) => (i.movie_id ? [i.movie_id] : [])))];
  let known = new Map<string, { year: number | null; genres: string[] }>();
  if (ids.length) {
    try {
      const rows = await db
        .selectFrom('movies')
        .select(['id', 'year', 'genres'])
        .where('tenant', '=', tenant)
        .where('id', 'in', ids)
        .execute();
      known = new Map(rows.map((r) => [r.id, { year: r.year, genres: r.genres }]));
    } catch (err) {
      if ((err as { code?: string }).code !== UNDEFINED_TABLE) throw err;
    }
  }
  return items.map((i) => {
    const m = i.movie_id ? known.get(i.movie_id) : undefined;
    const parts = [m?.year ? String(m.year) : '', (m?.genres ?? []).join(', ')].filter(Boolean);
    return { title: i.title, details: parts.join(' · ') };
  });
}
