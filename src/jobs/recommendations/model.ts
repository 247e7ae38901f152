// Item-item kNN over ratings, with shrinkage, plus the popularity tables the cold start needs.
//
// Why item-kNN rather than implicit matrix factorisation: the model (each movie's nearest neighbours) depends on the
// whole tenant but changes slowly, while a user's profile is read fresh at scoring time, so a rating counts in that
// user's next result without retraining; scoring a user is a sparse sum over their rated movies (microseconds);
// training is one pass over co-ratings with no hyper-parameters beyond k and the shrinkage; and each
// recommendation can be explained ("because you rated X").
//
// Similarity: cosine over mean-centred, clipped preference weights w(u,i) = max(0, r(u,i) - mean(u) + 1), shrunk by
// n/(n + SHRINK) where n is the number of co-raters, keeping the top K neighbours per movie.

export interface CatalogMovie {
  id: string;
  title: string;
  genres: string[];
}

/** Ratings in compressed rows, user-major: user u's ratings are items/values[userPtr[u] .. userPtr[u+1]). */
export interface RatingMatrix {
  nUsers: number;
  userPtr: Int32Array;
  items: Int32Array;
  values: Float32Array;
}

export interface TrainOptions {
  k?: number;
  shrink?: number;
  /** Called every few hundred movies, so a long training can yield and notice cancellation. */
  tick?: () => Promise<void>;
}

export interface Model {
  version: number;
  builtAt: number;
  trainMs: number;
  movies: CatalogMovie[];
  index: Map<string, number>;
  k: number;
  /** Neighbours of movie i: nbr/sim[i*k .. i*k + nbrCount[i]). */
  nbr: Int32Array;
  sim: Float32Array;
  nbrCount: Uint16Array;
  /** Number of ratings per movie, and movie indices by that count, most rated first. */
  popularity: Int32Array;
  popular: Int32Array;
  /** Genre name → index, and each movie's genre indices. */
  genreIndex: Map<string, number>;
  movieGenres: Int32Array[];
  users: number;
  ratings: number;
}

const DEFAULT_K = 50;
const DEFAULT_SHRINK = 20;

/** Preference weight of a rating for its user: above-average ratings count more, far-below ones not at all. */
function preferenceWeights(m: RatingMatrix): Float32Array {
  const w = new Float32Array(m.values.length);
  for (let u = 0; u < m.nUsers; u++) {
    const a = m.userPtr[u];
    const b = m.userPtr[u + 1];
    if (a === b) continue;
    let sum = 0;
    for (let p = a; p < b; p++) sum += m.values[p];
    const mean = sum / (b - a);
    for (let p = a; p < b; p++) w[p] = Math.max(0, m.values[p] - mean + 1);
  }
  return w;
}

export async function train(
  movies: CatalogMovie[],
  m: RatingMatrix,
  version: number,
  opts: TrainOptions = {},
): Promise<Model> {
  const started = performance.now();
  const k = opts.k ?? DEFAULT_K;
  const shrink = opts.shrink ?? DEFAULT_SHRINK;
  const nItems = movies.length;
  const w = preferenceWeights(m);
  const popularity = new Int32Array(nItems);
  for (let p = 0; p < m.items.length; p++) popularity[m.items[p]]++;

  // Only positive weights take part in similarities (a zero adds nothing to a dot product): keep those, each user's
  // row in ascending movie order, so the pair (i, j) can be visited once, from the smaller index.
  const pPtr = new Int32Array(m.nUsers + 1);
  const pItems = new Int32Array(m.items.length);
  const pW = new Float32Array(m.items.length);
  let np = 0;
  for (let u = 0; u < m.nUsers; u++) {
    const from = np;
    for (let p = m.userPtr[u]; p < m.userPtr[u + 1]; p++) {
      if (w[p] <= 0) continue;
      pItems[np] = m.items[p];
      pW[np++] = w[p];
    }
    sortRow(pItems, pW, from, np);
    pPtr[u + 1] = np;
  }

  // Item-major view: for each movie, its (user, weight, position in that user's row); and each movie's norm.
  const count = new Int32Array(nItems);
  for (let p = 0; p < np; p++) count[pItems[p]]++;
  const itemPtr = new Int32Array(nItems + 1);
  for (let i = 0; i < nItems; i++) itemPtr[i + 1] = itemPtr[i] + count[i];
  const itemUsers = new Int32Array(np);
  const itemW = new Float32Array(np);
  const itemPos = new Int32Array(np);
  const fill = itemPtr.slice(0, nItems);
  const norm = new Float64Array(nItems);
  for (let u = 0; u < m.nUsers; u++) {
    for (let p = pPtr[u]; p < pPtr[u + 1]; p++) {
      const i = pItems[p];
      const q = fill[i]++;
      itemUsers[q] = u;
      itemW[q] = pW[p];
      itemPos[q] = p;
      norm[i] += pW[p] * pW[p];
    }
  }
  for (let i = 0; i < nItems; i++) norm[i] = Math.sqrt(norm[i]);

  // Every movie's k best neighbours so far, as min-heaps on similarity (the weakest on top).
  const nbr = new Int32Array(nItems * k);
  const sim = new Float32Array(nItems * k);
  const nbrCount = new Uint16Array(nItems);
  const dot = new Float64Array(nItems);
  const co = new Int32Array(nItems);
  const touched = new Int32Array(nItems);

  for (let i = 0; i < nItems; i++) {
    if (opts.tick && i % 250 === 0) await opts.tick();
    if (norm[i] === 0) continue;
    const nTouched = coRatings(
      itemPtr[i],
      itemPtr[i + 1],
      itemUsers,
      itemW,
      itemPos,
      pPtr,
      pItems,
      pW,
      co,
      dot,
      touched,
    );
    for (let t = 0; t < nTouched; t++) {
      const j = touched[t];
      const n = co[j];
      const d = dot[j];
      co[j] = 0;
      dot[j] = 0;
      const s = (d / (norm[i] * norm[j])) * (n / (n + shrink));
      offer(nbr, sim, nbrCount, k, i, j, s);
      offer(nbr, sim, nbrCount, k, j, i, s);
    }
  }

  const popular = Int32Array.from({ length: nItems }, (_, i) => i).sort(
    (a, b) => popularity[b] - popularity[a] || a - b,
  );
  const genreIndex = new Map<string, number>();
  const movieGenres = movies.map((mv) =>
    Int32Array.from(mv.genres, (g) => {
      let x = genreIndex.get(g);
      if (x === undefined) genreIndex.set(g, (x = genreIndex.size));
      return x;
    }),
  );
  return {
    version,
    builtAt: Date.now(),
    trainMs: Math.round(performance.now() - started),
    movies,
    index: new Map(movies.map((mv, i) => [mv.id, i])),
    k,
    nbr,
    sim,
    nbrCount,
    popularity,
    popular,
    genreIndex,
    movieGenres,
    users: m.nUsers,
    ratings: m.items.length,
  };
}

/**
 * The hot loop, half of the sum over users of their (positive) rating count squared: for every user who liked
 * movie i, add the movies after i in their row to co-rater counts and dot products. A plain function over typed
 * arrays, so V8 compiles it tight.
 */
function coRatings(
  from: number,
  to: number,
  itemUsers: Int32Array,
  itemW: Float32Array,
  itemPos: Int32Array,
  userPtr: Int32Array,
  items: Int32Array,
  w: Float32Array,
  co: Int32Array,
  dot: Float64Array,
  touched: Int32Array,
): number {
  let nTouched = 0;
  for (let q = from; q < to; q++) {
    const a = itemW[q];
    const end = userPtr[itemUsers[q] + 1];
    for (let p = itemPos[q] + 1; p < end; p++) {
      const j = items[p];
      if (co[j] === 0) touched[nTouched++] = j;
      co[j]++;
      dot[j] += a * w[p];
    }
  }
  return nTouched;
}

/** Offers neighbour j with similarity s to movie i's min-heap of its k best. */
function offer(nbr: Int32Array, sim: Float32Array, size: Uint16Array, k: number, i: number, j: number, s: number) {
  const base = i * k;
  const n = size[i];
  if (n < k) {
    let c = n;
    size[i] = n + 1;
    while (c > 0) {
      const parent = (c - 1) >> 1;
      if (sim[base + parent] <= s) break;
      sim[base + c] = sim[base + parent];
      nbr[base + c] = nbr[base + parent];
      c = parent;
    }
    sim[base + c] = s;
    nbr[base + c] = j;
    return;
  }
  if (s <= sim[base]) return;
  let c = 0;
  for (;;) {
    const l = 2 * c + 1;
    if (l >= n) break;
    const r = l + 1;
    const m = r < n && sim[base + r] < sim[base + l] ? r : l;
    if (sim[base + m] >= s) break;
    sim[base + c] = sim[base + m];
    nbr[base + c] = nbr[base + m];
    c = m;
  }
  sim[base + c] = s;
  nbr[base + c] = j;
}

/** Sorts one row's (item, weight) pairs by item; rows usually arrive sorted, so this is mostly a check. */
function sortRow(items: Int32Array, w: Float32Array, from: number, to: number) {
  let sorted = true;
  for (let p = from + 1; p < to && sorted; p++) sorted = items[p - 1] < items[p];
  if (sorted) return;
  const order = Array.from({ length: to - from }, (_, x) => from + x).sort((a, b) => items[a] - items[b]);
  const it = order.map((p) => items[p]);
  const ws = order.map((p) => w[p]);
  items.set(it, from);
  w.set(ws, from);
}

/** Builds the compressed rows from (user, item, value) triples that are already grouped by user. */
export function toMatrix(nUsers: number, user: Int32Array, items: Int32Array, values: Float32Array): RatingMatrix {
  const userPtr = new Int32Array(nUsers + 1);
  for (let p = 0; p < user.length; p++) userPtr[user[p] + 1]++;
  for (let u = 0; u < nUsers; u++) userPtr[u + 1] += userPtr[u];
  return { nUsers, userPtr, items, values };
}
