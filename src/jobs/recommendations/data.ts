// PostgreSQL access for the catalog, ratings and stored recommendations. Functions take db or a transaction first.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, RecommendationItem, RecommendationRow } from '../../db/types.js';
import { toMatrix, type CatalogMovie, type RatingMatrix } from './model.js';
import type { UserRating } from './recommend.js';

type Q = Kysely<Database> | Transaction<Database>;

export interface MovieInput {
  id: string;
  title: string;
  genres: string[];
  year?: number | null;
}

export interface RatingInput {
  user_id: string;
  movie_id: string;
  rating: number;
}

/** The model's inputs changed: bump the tenant's version (in the writer's transaction). */
export async function bumpVersion(db: Q, tenant: string): Promise<number> {
  const row = await db
    .insertInto('catalog_versions')
    .values({ tenant, version: 1 })
    .onConflict((oc) =>
      oc.column('tenant').doUpdateSet({ version: sql`catalog_versions.version + 1`, updated_at: sql`now()` }),
    )
    .returning('version')
    .executeTakeFirstOrThrow();
  return Number(row.version);
}

export async function catalogVersion(db: Q, tenant: string): Promise<number> {
  const row = await db.selectFrom('catalog_versions').select('version').where('tenant', '=', tenant).executeTakeFirst();
  return row ? Number(row.version) : 0;
}

/** Upserts in one statement per call (unnest keeps it to one round trip for thousands of rows). */
export async function upsertMovies(db: Q, tenant: string, movies: MovieInput[]): Promise<void> {
  if (!movies.length) return;
  await sql`
    insert into movies (tenant, id, title, genres, year)
    select ${tenant}, m.id, m.title, array(select jsonb_array_elements_text(m.genres)), m.year
    from jsonb_to_recordset(${JSON.stringify(movies.map((m) => ({ ...m, year: m.year ?? null })))}::jsonb)
      as m(id text, title text, genres jsonb, year int)
    on conflict (tenant, id) do update
      set title = excluded.title, genres = excluded.genres, year = excluded.year, updated_at = now()
  `.execute(db);
}

/** Movie ids among `ids` that the tenant's catalog does not have. */
export async function unknownMovies(db: Q, tenant: string, ids: string[]): Promise<Set<string>> {
  const wanted = [...new Set(ids)];
  const found = await db
    .selectFrom('movies')
    .select('id')
    .where('tenant', '=', tenant)
    .where('id', '=', sql<string>`any(${wanted}::text[])`)
    .execute();
  const known = new Set(found.map((r) => r.id));
  return new Set(wanted.filter((id) => !known.has(id)));
}

export async function upsertRatings(db: Q, tenant: string, ratings: RatingInput[]): Promise<void> {
  if (!ratings.length) return;
  await sql`
    insert into ratings (tenant, user_id, movie_id, rating)
    select ${tenant}, u, m, r from unnest(${ratings.map((x) => x.user_id)}::text[], ${ratings.map((x) => x.movie_id)}::text[], ${ratings.map((x) => x.rating)}::real[]) as t(u, m, r)
    on conflict (tenant, user_id, movie_id) do update set rating = excluded.rating, updated_at = now()
  `.execute(db);
}

/** Their stored results no longer reflect their ratings. */
export async function markStale(db: Q, tenant: string, userIds: string[]): Promise<void> {
  if (!userIds.length) return;
  await db
    .updateTable('recommendations')
    .set({ stale: true })
    .where('tenant', '=', tenant)
    .where('user_id', '=', sql<string>`any(${[...new Set(userIds)]}::text[])`)
    .execute();
}

export async function listMovies(db: Q, tenant: string, opts: { genre?: string; after?: string; limit: number }) {
  let q = db.selectFrom('movies').select(['id', 'title', 'genres', 'year']).where('tenant', '=', tenant);
  if (opts.genre) q = q.where('genres', '@>', sql<string[]>`array[${opts.genre}]::text[]`);
  if (opts.after) q = q.where('id', '>', opts.after);
  return q.orderBy('id').limit(opts.limit).execute();
}

// A user's ratings travel as two strings joined by the unit separator (a control character no id may contain):
// one row per user instead of one per rating cuts the client's parsing work several times over.
const SEP = '\u001f';
const perUser = (where: ReturnType<typeof sql>) => sql<{ u: string; m: string; r: string; now: Date }>`
  select now() as now, user_id as u, string_agg(movie_id, chr(31) order by movie_id) as m, string_agg(rating::text, chr(31) order by movie_id) as r
  from ratings where ${where} group by user_id order by user_id`;

/** Everything a model is trained from, read in pages of users so memory stays flat whatever the size. */
export async function loadTrainingData(
  db: Q,
  tenant: string,
  pageUsers = 2_000,
): Promise<{ movies: CatalogMovie[]; matrix: RatingMatrix; users: string[] }> {
  const movies = await db
    .selectFrom('movies')
    .select(['id', 'title', 'genres'])
    .where('tenant', '=', tenant)
    .orderBy('id')
    .execute();
  const index = new Map(movies.map((m, i) => [m.id, i]));
  const users: string[] = [];
  let user = new Int32Array(1 << 16);
  let items = new Int32Array(1 << 16);
  let values = new Float32Array(1 << 16);
  let n = 0;
  for (;;) {
    const after = users.length ? sql`and user_id > ${users[users.length - 1]}` : sql``;
    const { rows } = await sql<{
      u: string;
      m: string;
      r: string;
    }>`${perUser(sql`tenant = ${tenant} ${after}`)} limit ${pageUsers}`.execute(db);
    for (const row of rows) {
      const ms = row.m.split(SEP);
      const rs = row.r.split(SEP);
      if (n + ms.length > user.length) {
        const size = Math.max(user.length * 2, n + ms.length);
        user = grow(user, size);
        items = grow(items, size);
        values = grow(values, size);
      }
      const u = users.push(row.u) - 1;
      for (let k = 0; k < ms.length; k++) {
        const ix = index.get(ms[k]);
        // A movie added after the catalog was read: the next model will know it.
        if (ix === undefined) continue;
        user[n] = u;
        items[n] = ix;
        values[n] = Number(rs[k]);
        n++;
      }
    }
    if (rows.length < pageUsers) break;
  }
  return { movies, matrix: toMatrix(users.length, user.subarray(0, n), items.slice(0, n), values.slice(0, n)), users };
}

function grow<T extends Int32Array | Float32Array>(a: T, size: number): T {
  const b = new (a.constructor as new (n: number) => T)(size);
  b.set(a);
  return b;
}

/** Ratings of several users at once, with the database's clock at the read (results remember what they saw). */
export async function userRatings(
  db: Q,
  tenant: string,
  userIds: string[],
): Promise<{ readAt: Date; byUser: Map<string, UserRating[]> }> {
  const byUser = new Map<string, UserRating[]>(userIds.map((u) => [u, []]));
  const { rows } = await perUser(sql`tenant = ${tenant} and user_id = any(${userIds}::text[])`).execute(db);
  for (const row of rows) {
    const ms = row.m.split(SEP);
    const rs = row.r.split(SEP);
    byUser.set(
      row.u,
      ms.map((movie_id, k) => ({ movie_id, rating: Number(rs[k]) })),
    );
  }
  // The read's own clock when it found something (a rating committed after it makes the result stale).
  const readAt = rows[0]?.now ?? (await sql<{ now: Date }>`select now() as now`.execute(db)).rows[0].now;
  return { readAt, byUser };
}

/** Every user with at least one rating, in id order. */
export async function allUsers(db: Q, tenant: string): Promise<string[]> {
  const { rows } = await sql<{
    u: string;
  }>`select distinct user_id as u from ratings where tenant = ${tenant} order by user_id`.execute(db);
  return rows.map((r) => r.u);
}

export interface StoredResult {
  user_id: string;
  items: RecommendationItem[];
  strategy: string;
  model_version: number | null;
}

/**
 * Upserts results generated from ratings read at `readAt`. A user who rated something after that read gets a row
 * marked stale (a rating that raced the job must not be hidden behind a fresh-looking result). Returns who is fresh.
 */
export async function storeResults(
  db: Q,
  tenant: string,
  jobId: string,
  readAt: Date,
  results: StoredResult[],
): Promise<{ user_id: string; stale: boolean; generated_at: Date }[]> {
  if (!results.length) return [];
  // Committed without waiting for the WAL flush (one fsync less per job): the job is only marked succeeded by a
  // later, synchronous ledger commit, which flushes this record too. A crash before that loses the row and reruns
  // the job, so nothing reported done is ever lost.
  const { rows } = await sql<{ user_id: string; stale: boolean; generated_at: Date }>`
    with async_commit as (select set_config('synchronous_commit', 'off', true))
    insert into recommendations (tenant, user_id, job_id, items, strategy, model_version, stale, generated_at)
    select ${tenant}, r.user_id, ${jobId}::uuid, r.items, r.strategy, r.model_version,
      exists (select 1 from ratings x where x.tenant = ${tenant} and x.user_id = r.user_id and x.updated_at > ${readAt}),
      ${readAt}
    from jsonb_to_recordset(${JSON.stringify(results)}::jsonb) as r(user_id text, items jsonb, strategy text, model_version bigint), async_commit
    on conflict (tenant, user_id) do update set job_id = excluded.job_id, items = excluded.items, strategy = excluded.strategy,
      model_version = excluded.model_version, stale = excluded.stale, generated_at = excluded.generated_at
    returning user_id, stale, generated_at`.execute(db);
  return rows;
}

export async function findResult(db: Q, tenant: string, userId: string): Promise<RecommendationRow | undefined> {
  return db
    .selectFrom('recommendations')
    .selectAll()
    .where('tenant', '=', tenant)
    .where('user_id', '=', userId)
    .executeTakeFirst();
}

/** Writes a synthetic data set (seed, bench, tests) in large statements; upserts, so a rerun changes nothing. */
export async function writeSynthetic(
  db: Kysely<Database>,
  tenant: string,
  data: {
    movies: MovieInput[];
    ratings: { user: Int32Array; movie: Int32Array; rating: Float32Array };
    userId(u: number): string;
  },
  batch = 50_000,
): Promise<{ movies: number; ratings: number; users: number }> {
  for (let i = 0; i < data.movies.length; i += 5_000) await upsertMovies(db, tenant, data.movies.slice(i, i + 5_000));
  const { user, movie, rating } = data.ratings;
  for (let i = 0; i < user.length; i += batch) {
    const end = Math.min(user.length, i + batch);
    const rows: RatingInput[] = [];
    for (let p = i; p < end; p++)
      rows.push({ user_id: data.userId(user[p]), movie_id: data.movies[movie[p]].id, rating: rating[p] });
    await upsertRatings(db, tenant, rows);
  }
  await bumpVersion(db, tenant);
  return { movies: data.movies.length, ratings: user.length, users: user.length ? user[user.length - 1] + 1 : 0 };
}
