// Catalog and ratings API, recommendation jobs (single, cold start, batch with chunk children), caching and
// staleness — against real PostgreSQL and Redis, with the workers running in this process.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelCache } from '../src/jobs/recommendations/cache.js';
import { writeSynthetic } from '../src/jobs/recommendations/data.js';
import { synthesize } from '../src/jobs/recommendations/synth.js';
import { client, createTestEnv, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let api: ReturnType<typeof client>;
let other: ReturnType<typeof client>;
let tenant: string;
const data = synthesize({ seed: 3, movies: 300, users: 40, ratingsPerUser: 30 });

beforeAll(async () => {
  env = await createTestEnv('reco', { env: { RECO_CHUNK_USERS: '10', RECO_MODEL_REFRESH_MS: '0' } });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
  other = client(env.app, (await tenantWithKeys(env)).clientKey);
  await writeSynthetic(env.db, tenant, data);
  await env.startWorkers(['recommendations', 'recommendations-chunk']);
});

afterAll(async () => {
  await env?.close();
});

const job = (id: string, states = ['succeeded', 'failed']) =>
  waitFor(
    async () => {
      const r = await api('GET', `/v1/jobs/${id}`);
      return states.includes(r.body.state) ? r.body : undefined;
    },
    { timeout: 30_000, what: `job ${id} to reach ${states.join('|')}` },
  );

const ratingCount = async () =>
  Number((await sql<{ n: number }>`select count(*)::int as n from ratings`.execute(env.db)).rows[0].n);

describe('catalog API', () => {
  it('upserts movies and lists them by id with a genre filter and a cursor', async () => {
    const w = await other('POST', '/v1/movies', {
      movies: [
        { id: 'a1', title: 'Alpha', genres: ['Drama', 'War'], year: 1999 },
        { id: 'a2', title: 'Beta', genres: ['Comedy'] },
        { id: 'a3', title: 'Gamma', genres: ['Drama'], year: 2020 },
      ],
    });
    expect(w.status).toBe(200);
    expect(w.body).toEqual({ upserted: 3 });
    const drama = await other('GET', '/v1/movies?genre=Drama&limit=1');
    expect(drama.body.items).toEqual([{ id: 'a1', title: 'Alpha', genres: ['Drama', 'War'], year: 1999 }]);
    const next = await other('GET', `/v1/movies?genre=Drama&limit=1&cursor=${drama.body.next_cursor}`);
    expect(next.body.items.map((m: { id: string }) => m.id)).toEqual(['a3']);
    expect(next.body.next_cursor).toBeNull();
    await other('POST', '/v1/movies', {
      movies: [{ id: 'a2', title: 'Beta (director’s cut)', genres: ['Comedy'], year: 2001 }],
    });
    const all = await other('GET', '/v1/movies');
    expect(all.body.items).toHaveLength(3);
    expect(all.body.items[1]).toEqual({ id: 'a2', title: 'Beta (director’s cut)', genres: ['Comedy'], year: 2001 });
    // Catalogs are per tenant.
    const mine = await api('GET', '/v1/movies?limit=200');
    expect(mine.body.items.some((m: { id: string }) => m.id === 'a1')).toBe(false);
  });

  it('refuses bad movies, naming each, and writes none of the batch', async () => {
    const r = await other('POST', '/v1/movies', {
      movies: [
        { id: 'ok1', title: 'Fine', genres: [] },
        { id: 'bad id', title: 'Spaces', genres: [] },
        { id: 'ok2', title: '', genres: [], year: 1200 },
      ],
    });
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toContain('application/problem+json');
    const paths = r.body.errors.map((e: { path: string }) => e.path);
    expect(paths).toEqual(expect.arrayContaining(['movies.1.id', 'movies.2.title', 'movies.2.year']));
    const dup = await other('POST', '/v1/movies', {
      movies: [
        { id: 'd', title: 'x' },
        { id: 'd', title: 'y' },
      ],
    });
    expect(dup.status).toBe(400);
    expect(dup.body.errors).toEqual([{ path: 'movies.1', message: 'duplicate of movies.0' }]);
    const big = await other('POST', '/v1/movies', {
      movies: Array.from({ length: 1001 }, (_, i) => ({ id: `b${i}`, title: 't' })),
    });
    expect(big.status).toBe(400);
    expect(big.body.errors[0].path).toBe('movies');
    const ids = (await other('GET', '/v1/movies')).body.items.map((m: { id: string }) => m.id);
    expect(ids).toEqual(['a1', 'a2', 'a3']);
  });

  it('refuses ratings out of range or of unknown movies, naming them, with nothing written', async () => {
    const before = await ratingCount();
    const range = await api('POST', '/v1/ratings', {
      ratings: [
        { user_id: 'x1', movie_id: 'm00001', rating: 4 },
        { user_id: 'x1', movie_id: 'm00002', rating: 5.5 },
        { user_id: 'x1', movie_id: 'm00003', rating: 0 },
      ],
    });
    expect(range.status).toBe(400);
    expect(range.body.errors.map((e: { path: string }) => e.path)).toEqual(['ratings.1.rating', 'ratings.2.rating']);
    const unknown = await api('POST', '/v1/ratings', {
      ratings: [
        { user_id: 'x1', movie_id: 'm00001', rating: 4 },
        { user_id: 'x1', movie_id: 'nope', rating: 3 },
        { user_id: 'x2', movie_id: 'a1', rating: 3 },
      ],
    });
    expect(unknown.status).toBe(422);
    expect(unknown.body.errors).toEqual([
      { path: 'ratings.1.movie_id', message: "no movie 'nope' in this tenant's catalog" },
      // a1 exists, but in another tenant's catalog.
      { path: 'ratings.2.movie_id', message: "no movie 'a1' in this tenant's catalog" },
    ]);
    const big = await api('POST', '/v1/ratings', {
      ratings: Array.from({ length: 10_001 }, (_, i) => ({ user_id: `y${i}`, movie_id: 'm00001', rating: 3 })),
    });
    expect(big.status).toBe(400);
    const extra = await api('POST', '/v1/ratings', {
      ratings: [{ user_id: 'x1', movie_id: 'm00001', rating: 4, note: 'hi' }],
    });
    expect(extra.status).toBe(400);
    expect(await ratingCount()).toBe(before);
  });
});

describe('recommendation jobs', () => {
  it('recommends unrated movies with item-kNN, stores the result and serves it from the cache', async () => {
    const user = data.userId(0);
    const r = await api('POST', `/v1/users/${user}/recommendations`, { limit: 5 });
    expect(r.status).toBe(202);
    const done = await job(r.body.id);
    expect(done.state).toBe('succeeded');
    const result = done.result;
    expect(result).toMatchObject({ user_id: user, strategy: 'item_knn' });
    expect(result.items).toHaveLength(5);
    const scores = result.items.map((i: { score: number }) => i.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    const rated = new Set(
      (
        await env.db
          .selectFrom('ratings')
          .select('movie_id')
          .where('tenant', '=', tenant)
          .where('user_id', '=', user)
          .execute()
      ).map((x) => x.movie_id),
    );
    for (const it of result.items) {
      expect(rated.has(it.movie_id)).toBe(false);
      expect(it.title).toBe(data.movies.find((m) => m.id === it.movie_id)!.title);
    }
    const got = await api('GET', `/v1/users/${user}/recommendations`);
    expect(got.status).toBe(200);
    expect(got.headers.get('x-cache')).toBe('hit');
    expect(got.body).toEqual({ ...result, job_id: r.body.id, stale: false });
    // Another tenant has no such result.
    expect((await other('GET', `/v1/users/${user}/recommendations`)).status).toBe(404);
  });

  it('answers 404 before any job, and an unknown user gets the cold-start fallback', async () => {
    expect((await api('GET', '/v1/users/nobody/recommendations')).status).toBe(404);
    const r = await api('POST', '/v1/jobs', { type: 'recommendations', payload: { user_id: 'nobody' } });
    const done = await job(r.body.id);
    expect(done.state).toBe('succeeded');
    expect(done.result.strategy).toBe('cold_start:popular');
    expect(done.result.items).toHaveLength(10);
    // Popular = most rated: the first item is the most rated movie.
    const top = await sql<{
      movie_id: string;
    }>`select movie_id from ratings where tenant = ${tenant} group by movie_id order by count(*) desc, movie_id limit 1`.execute(
      env.db,
    );
    expect(done.result.items[0].movie_id).toBe(top.rows[0].movie_id);
  });

  it('a user with few ratings gets what is popular in their genres', async () => {
    const horror = data.movies.filter((m) => m.genres.includes('Horror')).slice(0, 2);
    await api('POST', '/v1/ratings', {
      ratings: horror.map((m) => ({ user_id: 'newbie', movie_id: m.id, rating: 5 })),
    });
    const r = await api('POST', '/v1/users/newbie/recommendations');
    const done = await job(r.body.id);
    expect(done.result.strategy).toBe('cold_start:popular_in_genres');
    expect(done.result.items).toHaveLength(10);
    const theirs = new Set(horror.flatMap((m) => m.genres));
    for (const it of done.result.items)
      expect(data.movies.find((m) => m.id === it.movie_id)!.genres.some((g) => theirs.has(g))).toBe(true);
  });

  it('a new rating makes the stored result stale and drops the cached one; the next job uses it at once', async () => {
    const user = data.userId(1);
    const first = await job((await api('POST', `/v1/users/${user}/recommendations`)).body.id);
    expect((await api('GET', `/v1/users/${user}/recommendations`)).headers.get('x-cache')).toBe('hit');
    const top = first.result.items[0].movie_id;
    expect((await api('POST', '/v1/ratings', { ratings: [{ user_id: user, movie_id: top, rating: 1 }] })).status).toBe(
      200,
    );
    const stale = await api('GET', `/v1/users/${user}/recommendations`);
    expect(stale.headers.get('x-cache')).toBe('miss');
    expect(stale.body.stale).toBe(true);
    const second = await job((await api('POST', `/v1/users/${user}/recommendations`)).body.id);
    expect(second.result.items.map((i: { movie_id: string }) => i.movie_id)).not.toContain(top);
    const fresh = await api('GET', `/v1/users/${user}/recommendations`);
    expect(fresh.body.stale).toBe(false);
    expect(fresh.body.generated_at).toBe(second.result.generated_at);
  });

  it('trains the model once per catalog version and reuses it across jobs', async () => {
    const cache = modelCache(env.db, env.config);
    const a = await cache.get(tenant);
    for (const u of [2, 3]) await job((await api('POST', `/v1/users/${data.userId(u)}/recommendations`)).body.id);
    const b = await cache.get(tenant);
    expect(b.model).toBe(a.model);
    await api('POST', '/v1/ratings', { ratings: [{ user_id: data.userId(2), movie_id: 'm00007', rating: 4.5 }] });
    // The next job still gets the current model (no waiting) and starts the retraining; then the new one serves.
    expect((await cache.get(tenant)).model).toBe(a.model);
    const c = await waitFor(async () => {
      const now = await cache.get(tenant);
      return now.model !== a.model ? now : undefined;
    });
    expect(c.model.version).toBeGreaterThan(a.model.version);
  });

  it('documents the routes in the OpenAPI document', async () => {
    const doc = (await client(env.app)('GET', '/openapi.json')).body;
    for (const path of ['/v1/movies', '/v1/ratings', '/v1/users/{user_id}/recommendations'])
      expect(Object.keys(doc.paths)).toContain(path);
    expect(Object.keys(doc.paths['/v1/users/{user_id}/recommendations'])).toEqual(
      expect.arrayContaining(['get', 'post']),
    );
  });

  it('refuses the internal chunk type and chunk-shaped payloads through the public API', async () => {
    const chunk = await api('POST', '/v1/jobs', { type: 'recommendations-chunk', payload: { user_ids: ['u00001'] } });
    expect(chunk.status).toBe(400);
    expect(chunk.body.errors[0].path).toBe('type');
    expect(chunk.body.errors[0].message).not.toContain('recommendations-chunk');
    const mixed = await api('POST', '/v1/jobs', {
      type: 'recommendations',
      payload: { all_users: true, user_ids: ['u00001'] },
    });
    expect(mixed.status).toBe(400);
    const limit = await api('POST', '/v1/jobs', { type: 'recommendations', payload: { user_id: 'u1', limit: 101 } });
    expect(limit.status).toBe(400);
  });
});
