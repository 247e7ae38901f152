// Offline evaluation: hold out a share of each user's ratings (fixed seed), train on the rest, and rank.
import { train, toMatrix, type CatalogMovie, type Model } from './model.js';
import { Scorer } from './recommend.js';
import { rng } from './synth.js';

export interface EvalInput {
  movies: CatalogMovie[];
  /** Triples grouped by user (user indices 0..nUsers-1, ascending). */
  user: Int32Array;
  movie: Int32Array;
  rating: Float32Array;
  nUsers: number;
}

interface Metrics {
  precision: number;
  recall: number;
  ndcg: number;
  /** Users with at least one relevant held-out movie (the averages are over them). */
  users: number;
}

export interface EvalReport {
  k: number;
  holdout: number;
  seed: number;
  relevant_min_rating: number;
  train_ratings: number;
  test_ratings: number;
  train_ms: number;
  item_knn: Metrics;
  popularity: Metrics;
  lift: { precision: number; recall: number; ndcg: number };
}

export async function evaluate(
  input: EvalInput,
  opts: {
    k?: number;
    holdout?: number;
    seed?: number;
    relevantMin?: number;
    neighbours?: number;
    shrink?: number;
  } = {},
): Promise<EvalReport> {
  const { k = 10, holdout = 0.2, seed = 7, relevantMin = 4 } = opts;
  const rand = rng(seed);
  const n = input.user.length;
  const isTest = new Uint8Array(n);
  // Per user: shuffle their ratings and hold out round(share * count) of them.
  for (let a = 0; a < n; ) {
    let b = a;
    while (b < n && input.user[b] === input.user[a]) b++;
    const idx = Array.from({ length: b - a }, (_, x) => a + x);
    for (let x = idx.length - 1; x > 0; x--) {
      const y = Math.floor(rand() * (x + 1));
      [idx[x], idx[y]] = [idx[y], idx[x]];
    }
    const take = Math.round((b - a) * holdout);
    for (let x = 0; x < take; x++) isTest[idx[x]] = 1;
    a = b;
  }
  const keep = (flag: number) => {
    const pos: number[] = [];
    for (let p = 0; p < n; p++) if (isTest[p] === flag) pos.push(p);
    return {
      user: Int32Array.from(pos, (p) => input.user[p]),
      movie: Int32Array.from(pos, (p) => input.movie[p]),
      rating: Float32Array.from(pos, (p) => input.rating[p]),
    };
  };
  const tr = keep(0);
  const te = keep(1);
  const model = await train(input.movies, toMatrix(input.nUsers, tr.user, tr.movie, tr.rating), 0, {
    k: opts.neighbours,
    shrink: opts.shrink,
  });

  const trainPtr = toMatrix(input.nUsers, tr.user, tr.movie, tr.rating).userPtr;
  const testPtr = toMatrix(input.nUsers, te.user, te.movie, te.rating).userPtr;
  const knn = new Acc();
  const pop = new Acc();
  const scorer = new Scorer(model);
  for (let u = 0; u < input.nUsers; u++) {
    const relevant = new Set<number>();
    for (let p = testPtr[u]; p < testPtr[u + 1]; p++) if (te.rating[p] >= relevantMin) relevant.add(te.movie[p]);
    if (relevant.size === 0) continue;
    const ratings = [];
    for (let p = trainPtr[u]; p < trainPtr[u + 1]; p++)
      ratings.push({ movie_id: input.movies[tr.movie[p]].id, rating: tr.rating[p] });
    knn.add(
      scorer.recommend(ratings, k).items.map((x) => x.movie),
      relevant,
      k,
    );
    pop.add(
      popularityBaseline(model, new Set(Array.from(tr.movie.subarray(trainPtr[u], trainPtr[u + 1]))), k),
      relevant,
      k,
    );
  }
  const a = knn.result();
  const b = pop.result();
  const ratio = (x: number, y: number) => (y > 0 ? round(x / y) : 0);
  return {
    k,
    holdout,
    seed,
    relevant_min_rating: relevantMin,
    train_ratings: tr.user.length,
    test_ratings: te.user.length,
    train_ms: model.trainMs,
    item_knn: a,
    popularity: b,
    lift: {
      precision: ratio(a.precision, b.precision),
      recall: ratio(a.recall, b.recall),
      ndcg: ratio(a.ndcg, b.ndcg),
    },
  };
}

/** The naive recommender: the most-rated movies the user has not rated. */
function popularityBaseline(model: Model, seen: Set<number>, k: number): number[] {
  const out: number[] = [];
  for (let p = 0; p < model.popular.length && out.length < k; p++)
    if (!seen.has(model.popular[p])) out.push(model.popular[p]);
  return out;
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;

class Acc {
  private p = 0;
  private r = 0;
  private g = 0;
  private n = 0;
  add(list: number[], relevant: Set<number>, k: number) {
    let hits = 0;
    let dcg = 0;
    list.slice(0, k).forEach((m, rank) => {
      if (relevant.has(m)) {
        hits++;
        dcg += 1 / Math.log2(rank + 2);
      }
    });
    let idcg = 0;
    for (let rank = 0; rank < Math.min(k, relevant.size); rank++) idcg += 1 / Math.log2(rank + 2);
    this.p += hits / k;
    this.r += hits / relevant.size;
    this.g += dcg / idcg;
    this.n++;
  }
  result(): Metrics {
    const d = this.n || 1;
    return { precision: round(this.p / d), recall: round(this.r / d), ndcg: round(this.g / d), users: this.n };
  }
}
