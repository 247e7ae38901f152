// Scoring one user against a trained model, with the cold-start fallbacks.
import type { Model } from './model.js';

/** Below this many rated movies (known to the model), neighbours say too little: popular in the user's genres. */
const MIN_RATINGS_FOR_KNN = 3;

type Strategy = 'item_knn' | 'cold_start:popular_in_genres' | 'cold_start:popular';

export interface Recommendation {
  strategy: Strategy;
  items: { movie: number; score: number }[];
}

export interface UserRating {
  movie_id: string;
  rating: number;
}

/** Reusable per-process buffers: scoring allocates nothing per user. */
export class Scorer {
  private scores: Float64Array;
  private seen: Uint8Array;
  private touched: Int32Array;

  constructor(private readonly model: Model) {
    const n = model.movies.length;
    this.scores = new Float64Array(n);
    this.seen = new Uint8Array(n);
    this.touched = new Int32Array(n);
  }

  recommend(ratings: UserRating[], limit: number): Recommendation {
    const { model } = this;
    const rated: number[] = [];
    const values: number[] = [];
    for (const r of ratings) {
      const i = model.index.get(r.movie_id);
      if (i === undefined) continue;
      rated.push(i);
      values.push(r.rating);
    }
    try {
      for (const i of rated) this.seen[i] = 1;
      if (rated.length >= MIN_RATINGS_FOR_KNN) {
        const items = this.knn(rated, values, limit);
        // Neighbours may run out for a user of obscure titles: top up with what is popular in their genres.
        if (items.length >= limit) return { strategy: 'item_knn', items };
        for (const it of items) this.seen[it.movie] = 1;
        const more = this.popularInGenres(rated, values, limit - items.length);
        for (const it of items) this.seen[it.movie] = 0;
        return { strategy: 'item_knn', items: [...items, ...more.map((m) => ({ ...m, score: 0 }))] };
      }
      if (rated.length > 0)
        return { strategy: 'cold_start:popular_in_genres', items: this.popularInGenres(rated, values, limit) };
      return { strategy: 'cold_start:popular', items: this.popular(limit) };
    } finally {
      for (const i of rated) this.seen[i] = 0;
    }
  }

  private knn(rated: number[], values: number[], limit: number) {
    const { model, scores, seen, touched } = this;
    const { k, nbr, sim, nbrCount } = model;
    let mean = 0;
    for (const v of values) mean += v;
    mean /= values.length;
    let n = 0;
    for (let x = 0; x < rated.length; x++) {
      const j = rated[x];
      // Same preference weight as training: liked more than usual counts more; disliked not at all.
      const pref = Math.max(0, values[x] - mean + 1);
      if (pref === 0) continue;
      const base = j * k;
      for (let t = 0; t < nbrCount[j]; t++) {
        const i = nbr[base + t];
        if (seen[i]) continue;
        if (scores[i] === 0) touched[n++] = i;
        scores[i] += sim[base + t] * pref;
      }
    }
    const best = topN(touched, n, scores, limit);
    for (let t = 0; t < n; t++) scores[touched[t]] = 0;
    return best;
  }

  /** Popularity weighted by how much of the user's liked genres a movie has. */
  private popularInGenres(rated: number[], values: number[], limit: number) {
    const { model, seen } = this;
    const taste = new Float64Array(model.genreIndex.size);
    let total = 0;
    for (let x = 0; x < rated.length; x++) {
      const like = Math.max(0.25, values[x] - 2);
      for (const g of model.movieGenres[rated[x]]) {
        taste[g] += like;
        total += like;
      }
    }
    if (total === 0) return this.popular(limit);
    // Look only at the head of the popularity list: a cold user is best served by well-known titles.
    const pool = Math.min(model.popular.length, Math.max(limit * 50, 500));
    const cand: { movie: number; score: number }[] = [];
    for (let p = 0; p < pool; p++) {
      const i = model.popular[p];
      if (seen[i]) continue;
      let match = 0;
      for (const g of model.movieGenres[i]) match = Math.max(match, taste[g] / total);
      cand.push({ movie: i, score: Math.log1p(model.popularity[i]) * (0.05 + match) });
    }
    cand.sort((a, b) => b.score - a.score || a.movie - b.movie);
    return cand.slice(0, limit);
  }

  private popular(limit: number) {
    const { model, seen } = this;
    const out: { movie: number; score: number }[] = [];
    for (let p = 0; p < model.popular.length && out.length < limit; p++) {
      const i = model.popular[p];
      if (!seen[i]) out.push({ movie: i, score: model.popularity[i] });
    }
    return out;
  }
}

/** The `limit` best candidates by score (ties: lower index first), with a bounded min-heap: no per-candidate garbage. */
function topN(cands: Int32Array, n: number, scores: Float64Array, limit: number) {
  const heap = new Int32Array(Math.min(limit, n));
  let size = 0;
  // a ranks below b: lower score, or equal score and higher index.
  const below = (a: number, b: number) => scores[a] < scores[b] || (scores[a] === scores[b] && a > b);
  for (let t = 0; t < n; t++) {
    const x = cands[t];
    if (size < heap.length) {
      let c = size++;
      while (c > 0) {
        const parent = (c - 1) >> 1;
        if (!below(x, heap[parent])) break;
        heap[c] = heap[parent];
        c = parent;
      }
      heap[c] = x;
    } else if (size > 0 && below(heap[0], x)) {
      let c = 0;
      for (;;) {
        const l = 2 * c + 1;
        if (l >= size) break;
        const r = l + 1;
        const m = r < size && below(heap[r], heap[l]) ? r : l;
        if (!below(heap[m], x)) break;
        heap[c] = heap[m];
        c = m;
      }
      heap[c] = x;
    }
  }
  const out = Array.from(heap.subarray(0, size), (movie) => ({ movie, score: scores[movie] }));
  return out.sort((a, b) => b.score - a.score || a.movie - b.movie);
}
