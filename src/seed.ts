// `cli seed --demo`: a demo tenant with keys, and a catalog with ratings from a fixed-seed latent-taste model
// (src/reco/synth.ts): 4,000 titles, 3,000 users, about 180,000 ratings. Rerunning it rewrites the same data.
import { createKey, createTenant } from './auth/keys.js';
import type { Config } from './config.js';
import type { Db } from './db/index.js';

/** The demo data set; `npm run eval:reco` evaluates on exactly this. */
export const DEMO_DATA = { seed: 42, movies: 4000, users: 3000, ratingsPerUser: 60 };

export async function seed({ config, db, args }: { config: Config; db: Db; args: string[] }) {
  if (!args.includes('--demo')) throw new Error('seed needs --demo');
  const exists = await db.selectFrom('tenants').select('id').where('id', '=', 'demo').executeTakeFirst();
  const tenant = exists ? { tenant: 'demo' } : await createTenant(db, 'demo');
  const client = await createKey(db, config.API_KEY_SECRET, 'demo', 'client');
  const operator = await createKey(db, config.API_KEY_SECRET, 'demo', 'operator');
  const { synthesize } = await import('./reco/synth.js');
  const { writeSynthetic } = await import('./reco/data.js');
  const catalog = await writeSynthetic(db, 'demo', synthesize(DEMO_DATA));
  const { installDemoSchedules } = await import('./schedules.js');
  const { createRegistry } = await import('./jobs/index.js');
  const schedules = await installDemoSchedules(config, db, createRegistry(), 'demo');
  return { ...tenant, client_key: client.key, operator_key: operator.key, catalog, schedules };
}
