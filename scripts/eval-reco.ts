// npm run eval:reco [-- --tenant NAME] [--relevant 4] [--seed 7]
// Holds out 20% of each user's ratings (fixed seed), trains on the rest, and compares item-kNN with the popularity
// baseline at k = 10. Without --tenant it evaluates the demo data set exactly as `cli seed --demo` writes it
// (generated in memory, no database needed); with --tenant it reads that tenant's ratings from PostgreSQL.
import { parseArgs } from 'node:util';
import { evaluate, type EvalInput } from '../src/jobs/recommendations/evaluate.js';
import { synthesize } from '../src/jobs/recommendations/synth.js';
import { DEMO_DATA } from '../src/seed.js';

const { values } = parseArgs({
  options: {
    tenant: { type: 'string' },
    relevant: { type: 'string', default: '4' },
    seed: { type: 'string', default: '7' },
    holdout: { type: 'string', default: '0.2' },
  },
});

async function input(): Promise<{ source: string; data: EvalInput }> {
  if (!values.tenant) {
    const d = synthesize(DEMO_DATA);
    return {
      source: `demo data (synthetic, seed ${DEMO_DATA.seed})`,
      data: {
        movies: d.movies,
        user: d.ratings.user,
        movie: d.ratings.movie,
        rating: d.ratings.rating,
        nUsers: DEMO_DATA.users,
      },
    };
  }
  const { loadConfigOrExit } = await import('../src/config.js');
  const { createDb } = await import('../src/db/index.js');
  const { loadTrainingData } = await import('../src/jobs/recommendations/data.js');
  const db = createDb(loadConfigOrExit().DATABASE_URL, 2);
  try {
    const { movies, matrix } = await loadTrainingData(db, values.tenant);
    const user = new Int32Array(matrix.items.length);
    for (let u = 0; u < matrix.nUsers; u++) user.fill(u, matrix.userPtr[u], matrix.userPtr[u + 1]);
    return {
      source: `tenant ${values.tenant} (PostgreSQL)`,
      data: { movies, user, movie: matrix.items, rating: matrix.values, nUsers: matrix.nUsers },
    };
  } finally {
    await db.destroy();
  }
}

const { source, data } = await input();
const report = await evaluate(data, {
  seed: Number(values.seed),
  relevantMin: Number(values.relevant),
  holdout: Number(values.holdout),
});
const row = (name: string, m: { precision: number; recall: number; ndcg: number }) =>
  `| ${name.padEnd(12)} | ${m.precision.toFixed(4)} | ${m.recall.toFixed(4)} | ${m.ndcg.toFixed(4)} |`;
console.log(
  `Evaluation on ${source}: ${data.movies.length} movies, ${data.nUsers} users, ${data.user.length} ratings.`,
);
console.log(
  `Held out ${report.holdout * 100}% per user (seed ${report.seed}); relevant = held-out rating >= ${report.relevant_min_rating}; ${report.item_knn.users} users with a relevant item.\n`,
);
console.log('| recommender  | P@10   | R@10   | NDCG@10 |');
console.log('|--------------|--------|--------|---------|');
console.log(row('item_knn', report.item_knn));
console.log(row('popularity', report.popularity));
console.log(
  `| ${'lift'.padEnd(12)} | ${report.lift.precision.toFixed(2)}x  | ${report.lift.recall.toFixed(2)}x  | ${report.lift.ndcg.toFixed(2)}x   |\n`,
);
console.log(JSON.stringify({ source, ...report }));
