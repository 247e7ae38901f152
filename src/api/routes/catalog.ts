// The tenant's catalog and ratings: bulk upserts, all or nothing, each bad item named.
import type { ApiServices } from '../../services.js';
import { createRoute, z } from '@hono/zod-openapi';
import {
  bumpVersion,
  listMovies,
  markStale,
  unknownMovies,
  upsertMovies,
  upsertRatings,
} from '../../jobs/recommendations/data.js';
import { forgetResults } from '../../jobs/recommendations/cache.js';
import { userId } from '../../jobs/recommendations/index.js';
import { problem, type FieldError } from '../errors.js';
import { problems, router, security } from '../openapi.js';
import { decodeCursor, encodeCursor, ListQuery } from '../params.js';

const MAX_MOVIES = 1000;
const MAX_RATINGS = 10_000;
const ID = /^[A-Za-z0-9._:@-]{1,64}$/;

const movieId = z.string().regex(ID, 'letters, digits and . _ : @ - only, 1 to 64 characters');
/** PostgreSQL text cannot hold U+0000: refused as invalid input, not left to fail the statement. */
const noNul = (v: string) => !v.includes('\0');
const nulMessage = 'must not contain the NUL character (\\u0000)';

const Movie = z
  .strictObject({
    id: movieId,
    title: z.string().trim().min(1).max(300).refine(noNul, nulMessage),
    genres: z.array(z.string().trim().min(1).max(40).refine(noNul, nulMessage)).max(20).default([]),
    year: z.number().int().min(1870).max(2100).nullable().optional(),
  })
  .openapi('Movie');

const Rating = z
  .strictObject({
    user_id: userId,
    movie_id: movieId,
    rating: z.number().min(0.5).max(5),
  })
  .openapi('Rating');

const MovieOut = z.object({
  id: z.string(),
  title: z.string(),
  genres: z.array(z.string()),
  year: z.number().int().nullable(),
});

/** Two items with one key in one request would make the upsert ambiguous: refuse them, naming both. */
function duplicates<T>(items: T[], key: (t: T) => string, path: string): FieldError[] {
  const first = new Map<string, number>();
  const errors: FieldError[] = [];
  items.forEach((t, i) => {
    const k = key(t);
    const at = first.get(k);
    if (at === undefined) first.set(k, i);
    else errors.push({ path: `${path}.${i}`, message: `duplicate of ${path}.${at}` });
  });
  return errors;
}

export function catalogRoutes(deps: ApiServices) {
  const app = router();
  const { db } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/movies',
      summary: "The tenant's catalog, by id",
      security,
      request: { query: ListQuery.extend({ genre: z.string().min(1).max(40).optional() }) },
      responses: {
        200: {
          description: 'A page of movies',
          content: {
            'application/json': { schema: z.object({ items: z.array(MovieOut), next_cursor: z.string().nullable() }) },
          },
        },
        ...problems(400, 401),
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const rows = await listMovies(db, c.get('principal').tenant, {
        genre: q.genre,
        after: q.cursor ? decodeCursor(q.cursor, ID) : undefined,
        limit: q.limit + 1,
      });
      const page = rows.slice(0, q.limit);
      const next_cursor = rows.length > q.limit ? encodeCursor(page[page.length - 1].id) : null;
      return c.json(
        { items: page.map((m) => ({ id: m.id, title: m.title, genres: m.genres, year: m.year })), next_cursor },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/movies',
      summary: `Upsert up to ${MAX_MOVIES} movies; all valid or none written`,
      security,
      request: {
        body: {
          required: true,
          content: {
            'application/json': { schema: z.strictObject({ movies: z.array(Movie).min(1).max(MAX_MOVIES) }) },
          },
        },
      },
      responses: {
        200: {
          description: 'Written',
          content: { 'application/json': { schema: z.object({ upserted: z.number().int() }) } },
        },
        ...problems(400, 401, 413),
      },
    }),
    async (c) => {
      const { movies } = c.req.valid('json');
      const dup = duplicates(movies, (m) => m.id, 'movies');
      if (dup.length) throw problem.validation(dup, 'Each movie id may appear once per request.');
      const tenant = c.get('principal').tenant;
      await db.transaction().execute(async (tx) => {
        await upsertMovies(
          tx,
          tenant,
          movies.map((m) => ({ ...m, genres: [...new Set(m.genres)] })),
        );
        await bumpVersion(tx, tenant);
      });
      return c.json({ upserted: movies.length }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/ratings',
      summary: `Upsert up to ${MAX_RATINGS} ratings (0.5..5) of catalog movies; all valid or none written`,
      description: "A user's new rating marks their stored recommendations stale and drops them from the cache.",
      security,
      request: {
        body: {
          required: true,
          content: {
            'application/json': { schema: z.strictObject({ ratings: z.array(Rating).min(1).max(MAX_RATINGS) }) },
          },
        },
      },
      responses: {
        200: {
          description: 'Written',
          content: {
            'application/json': { schema: z.object({ upserted: z.number().int(), users: z.number().int() }) },
          },
        },
        ...problems(400, 401, 413, 422),
      },
    }),
    async (c) => {
      const { ratings } = c.req.valid('json');
      const dup = duplicates(ratings, (r) => `${r.user_id}\u0000${r.movie_id}`, 'ratings');
      if (dup.length) throw problem.validation(dup, 'Each (user_id, movie_id) may appear once per request.');
      const tenant = c.get('principal').tenant;
      const users = [...new Set(ratings.map((r) => r.user_id))];
      await db.transaction().execute(async (tx) => {
        const unknown = await unknownMovies(
          tx,
          tenant,
          ratings.map((r) => r.movie_id),
        );
        if (unknown.size) {
          const errors = ratings.flatMap((r, i) =>
            unknown.has(r.movie_id)
              ? [{ path: `ratings.${i}.movie_id`, message: `no movie '${r.movie_id}' in this tenant's catalog` }]
              : [],
          );
          throw problem.unprocessable(
            'unknown-movies',
            `${unknown.size} movie id(s) are not in the catalog; nothing was written.`,
            { errors: errors.slice(0, 1000) },
          );
        }
        await upsertRatings(tx, tenant, ratings);
        await markStale(tx, tenant, users);
        await bumpVersion(tx, tenant);
      });
      // After the commit: a GET meanwhile may still see the old entry, never a new one computed before this write.
      await forgetResults(deps.redis, deps.config, tenant, users).catch((err) =>
        deps.log.warn({ err: String(err) }, 'could not drop cached recommendations'),
      );
      return c.json({ upserted: ratings.length, users: users.length }, 200);
    },
  );

  return app;
}
