// A synthetic catalog and ratings from a latent-taste model, deterministic for a given seed.
// Users like some genres and eras; what they watch depends on taste and a long-tailed popularity; their ratings
// depend on taste, the movie's quality and their own bias, plus noise. Nothing is downloaded.

const GENRES = [
  'Action',
  'Adventure',
  'Animation',
  'Children',
  'Comedy',
  'Crime',
  'Documentary',
  'Drama',
  'Fantasy',
  'Film-Noir',
  'Horror',
  'Musical',
  'Mystery',
  'Romance',
  'Sci-Fi',
  'Thriller',
  'War',
  'Western',
] as const;
// How common each genre is in the catalog (Drama and Comedy dominate, as in real catalogs).
const GENRE_WEIGHT = [9, 5, 2, 2, 12, 5, 2, 16, 2, 0.6, 4, 1, 2, 6, 3, 6, 1.5, 1];
// Genres that tend to come together.
const AFFINITY: Record<string, string[]> = {
  Action: ['Adventure', 'Thriller', 'Sci-Fi', 'Crime'],
  Adventure: ['Action', 'Fantasy', 'Children'],
  Animation: ['Children', 'Comedy', 'Fantasy'],
  Children: ['Animation', 'Comedy', 'Adventure'],
  Comedy: ['Romance', 'Drama', 'Children'],
  Crime: ['Thriller', 'Drama', 'Film-Noir', 'Mystery'],
  Documentary: ['War', 'Drama'],
  Drama: ['Romance', 'Crime', 'War'],
  Fantasy: ['Adventure', 'Animation', 'Sci-Fi'],
  'Film-Noir': ['Crime', 'Mystery', 'Thriller'],
  Horror: ['Thriller', 'Sci-Fi', 'Mystery'],
  Musical: ['Romance', 'Comedy', 'Children'],
  Mystery: ['Thriller', 'Crime', 'Film-Noir'],
  Romance: ['Comedy', 'Drama', 'Musical'],
  'Sci-Fi': ['Action', 'Adventure', 'Horror'],
  Thriller: ['Crime', 'Action', 'Mystery'],
  War: ['Drama', 'Action', 'Documentary'],
  Western: ['Action', 'Adventure', 'Drama'],
};
const WORDS_A = [
  'Silent',
  'Last',
  'Broken',
  'Golden',
  'Midnight',
  'Crimson',
  'Hidden',
  'Electric',
  'Lonely',
  'Savage',
  'Distant',
  'Burning',
  'Frozen',
  'Secret',
  'Wild',
  'Hollow',
  'Iron',
  'Paper',
  'Glass',
  'Northern',
];
const WORDS_B = [
  'River',
  'Empire',
  'Garden',
  'Horizon',
  'Protocol',
  'Harbor',
  'Kingdom',
  'Signal',
  'Summer',
  'Frontier',
  'Witness',
  'Machine',
  'Carnival',
  'Letter',
  'Orbit',
  'Station',
  'Promise',
  'Shadow',
  'Voyage',
  'Verdict',
];

/** mulberry32: small, fast, and good enough for simulation. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rand: () => number): number {
  const u = 1 - rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

function pickWeighted(
  rand: () => number,
  weights: readonly number[],
  total = weights.reduce((a, b) => a + b, 0),
): number {
  let x = rand() * total;
  for (let i = 0; i < weights.length; i++) {
    x -= weights[i];
    if (x < 0) return i;
  }
  return weights.length - 1;
}

interface SynthMovie {
  id: string;
  title: string;
  genres: string[];
  year: number;
}

export interface SynthOptions {
  seed?: number;
  movies?: number;
  users?: number;
  /** Mean ratings per user; activity is long-tailed around it. */
  ratingsPerUser?: number;
  /** How much taste (vs popularity) decides what a user watches. */
  tasteWeight?: number;
}

export interface SynthData {
  movies: SynthMovie[];
  /** Column arrays, user-major: ratings of user_ids[k] for movie_ids[k]. */
  ratings: { user: Int32Array; movie: Int32Array; rating: Float32Array };
  userId(u: number): string;
}

const FIRST_YEAR = 1925;
const LAST_YEAR = 2025;
const movieId = (m: number) => `m${String(m + 1).padStart(5, '0')}`;
const userIdOf = (u: number) => `u${String(u + 1).padStart(5, '0')}`;

export function synthesize(opts: SynthOptions = {}): SynthData {
  const { seed = 42, movies: nMovies = 4000, users: nUsers = 3000, ratingsPerUser = 60, tasteWeight = 2.2 } = opts;
  const rand = rng(seed);
  const G = GENRES.length;

  // Movies: 1-3 genres, a year (more recent titles are more numerous), a long-tailed popularity, a quality.
  const movies: SynthMovie[] = [];
  const movieGenres: number[][] = [];
  const popularity = new Float64Array(nMovies);
  const quality = new Float64Array(nMovies);
  const years = new Int32Array(nMovies);
  for (let m = 0; m < nMovies; m++) {
    const g0 = pickWeighted(rand, GENRE_WEIGHT);
    const gs = [g0];
    const extra = rand() < 0.55 ? (rand() < 0.35 ? 2 : 1) : 0;
    for (let k = 0; k < extra; k++) {
      const near = AFFINITY[GENRES[g0]];
      const g = GENRES.indexOf(near[Math.floor(rand() * near.length)] as (typeof GENRES)[number]);
      if (!gs.includes(g)) gs.push(g);
    }
    const year = Math.round(Math.min(LAST_YEAR, Math.max(FIRST_YEAR, LAST_YEAR - Math.abs(gaussian(rand)) * 22)));
    years[m] = year;
    movieGenres.push(gs);
    // Log-normal popularity: a few blockbusters, a long tail.
    popularity[m] = Math.exp(1.3 * gaussian(rand));
    quality[m] = 0.45 * gaussian(rand);
    const title = `${WORDS_A[Math.floor(rand() * WORDS_A.length)]} ${WORDS_B[Math.floor(rand() * WORDS_B.length)]}${rand() < 0.3 ? ` ${['II', 'III', 'Returns', 'Rising', 'Reborn'][Math.floor(rand() * 5)]}` : ''}`;
    movies.push({ id: movieId(m), title: `${title} (${year})`, genres: gs.map((g) => GENRES[g]), year });
  }

  const comboIndex = new Map<string, number>();
  const combos: number[][] = [];
  const movieCombo = Int32Array.from(movieGenres, (gs) => {
    const key = gs.join(',');
    let c = comboIndex.get(key);
    if (c === undefined) {
      comboIndex.set(key, (c = combos.length));
      combos.push(gs);
    }
    return c;
  });
  const comboAff = new Float64Array(combos.length);
  const comboW = new Float64Array(combos.length);
  const yearAff = new Float64Array(LAST_YEAR - FIRST_YEAR + 1);
  const yearW = new Float64Array(yearAff.length);

  const users: number[] = [];
  const moviesOut: number[] = [];
  const ratingsOut: number[] = [];
  const aff = new Float64Array(nMovies);
  const taken = new Uint8Array(nMovies);
  const cumulative = new Float64Array(nMovies);
  const taste = new Float64Array(G);

  for (let u = 0; u < nUsers; u++) {
    // Taste: two to four favourite genres, mild interest in their neighbours, dislike of a few others.
    taste.fill(-0.35);
    const favourites = 2 + Math.floor(rand() * 3);
    for (let k = 0; k < favourites; k++) {
      const g = pickWeighted(rand, GENRE_WEIGHT);
      taste[g] = Math.max(taste[g], 0.6 + 0.6 * rand());
      for (const n of AFFINITY[GENRES[g]]) {
        const j = GENRES.indexOf(n as (typeof GENRES)[number]);
        taste[j] = Math.max(taste[j], 0.1 + 0.2 * rand());
      }
    }
    const era = 2025 - Math.abs(gaussian(rand)) * 25; // the decade they like
    const eraWidth = 8 + rand() * 20;
    const bias = 0.35 * gaussian(rand);
    const critic = 0.4 + rand(); // how much quality matters to them
    // Activity is long-tailed: many light raters, a few heavy ones.
    const n = Math.min(
      Math.floor(nMovies * 0.4),
      Math.max(8, Math.round(ratingsPerUser * Math.exp(0.8 * gaussian(rand) - 0.32))),
    );

    // Affinity = genre part (per distinct genre combination) + era part (per year): two lookups per movie.
    for (let c = 0; c < combos.length; c++) {
      let t = 0;
      for (const g of combos[c]) t += taste[g];
      comboAff[c] = t / combos[c].length;
    }
    for (let y = 0; y < yearAff.length; y++) {
      const d = (FIRST_YEAR + y - era) / eraWidth;
      yearAff[y] = 0.5 * Math.exp(-0.5 * d * d) - 0.2;
    }
    for (let c = 0; c < combos.length; c++) comboW[c] = Math.exp(tasteWeight * comboAff[c]);
    for (let y = 0; y < yearAff.length; y++) yearW[y] = Math.exp(tasteWeight * yearAff[y]);
    let total = 0;
    for (let m = 0; m < nMovies; m++) {
      const c = movieCombo[m];
      const y = years[m] - FIRST_YEAR;
      aff[m] = comboAff[c] + yearAff[y];
      total += popularity[m] * comboW[c] * yearW[y];
      cumulative[m] = total;
    }
    // Sample without replacement: draw from the cumulative weights, skipping titles already taken.
    taken.fill(0);
    let got = 0;
    for (let tries = 0; got < n && tries < n * 30; tries++) {
      const x = rand() * total;
      let lo = 0;
      let hi = nMovies - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cumulative[mid] < x) lo = mid + 1;
        else hi = mid;
      }
      if (taken[lo]) continue;
      taken[lo] = 1;
      got++;
    }
    for (let m = 0; m < nMovies; m++) {
      if (!taken[m]) continue;
      const raw = 2.75 + bias + critic * quality[m] + 1.3 * aff[m] + 0.6 * gaussian(rand);
      users.push(u);
      moviesOut.push(m);
      ratingsOut.push(Math.min(5, Math.max(0.5, Math.round(raw * 2) / 2)));
    }
  }
  return {
    movies,
    ratings: { user: Int32Array.from(users), movie: Int32Array.from(moviesOut), rating: Float32Array.from(ratingsOut) },
    userId: userIdOf,
  };
}
