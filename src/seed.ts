// `cli seed --demo`: a demo tenant with keys, and a catalog with ratings from a fixed-seed latent-taste model
// (src/jobs/recommendations/synth.ts): 4,000 titles, 3,000 users (u00001 … u03000), about 180,000 ratings. Rerunning it keeps the
// tenant, rewrites the same catalog, ratings and schedules, and creates a new pair of keys (earlier keys keep working).
import { createKey, createTenant } from './auth/keys.js';
import type { Config } from './config.js';
import type { Db } from './db/index.js';
import { tenantExists } from './db/tenants.js';

/** The demo data set; `npm run eval:reco` evaluates on exactly this. */
export const DEMO_DATA = { seed: 42, movies: 4000, users: 3000, ratingsPerUser: 60 };

export async function seed({ config, db, args }: { config: Config; db: Db; args: string[] }) {
  if (!args.includes('--demo')) throw new Error('seed needs --demo');
  const exists = await tenantExists(db, 'demo');
  const tenant = exists ? { tenant: 'demo' } : await createTenant(db, 'demo');
  const client = await createKey(db, config.API_KEY_SECRET, 'demo', 'client');
  const operator = await createKey(db, config.API_KEY_SECRET, 'demo', 'operator');
  const { synthesize } = await import('./jobs/recommendations/synth.js');
  const { writeSynthetic } = await import('./jobs/recommendations/data.js');
  const catalog = await writeSynthetic(db, 'demo', synthesize(DEMO_DATA));
  const { installDemoSchedules } = await import('./schedules/index.js');
  const { createRegistry } = await import('./jobs/index.js');
  const schedules = await installDemoSchedules(config, db, createRegistry(), 'demo');
  return { ...tenant, client_key: client.key, operator_key: operator.key, catalog, schedules, created: !exists };
}

/** A demo user the seed always makes, with ratings: the quick start's and the example's default user. */
const DEMO_USER = 'u00042';

/** What `cli seed --demo` prints for a person: lines to paste into a shell, and what running it again does. */
export function seedReport(r: Awaited<ReturnType<typeof seed>>, config: Pick<Config, 'PORT'>): string {
  const catalog = Object.entries(r.catalog)
    .map(([k, v]) => `${v} ${k}`)
    .join(', ');
  return [
    `${r.created ? 'Created' : 'Refreshed'} the demo tenant "${r.tenant}": ${catalog}; schedules ${r.schedules.join(', ')}.`,
    '',
    'Paste these into the shell you will use for curl and `npm run example` (keys are shown only now):',
    '',
    `export API_URL=http://localhost:${config.PORT}`,
    `export API_KEY=${r.client_key}   # client key of tenant ${r.tenant}`,
    `export OPERATOR_KEY=${r.operator_key}   # operator key: /admin/queues, /v1/queues, /metrics`,
    `export USER_ID=${DEMO_USER}   # a demo user with ratings`,
    '',
    'Running it again keeps the tenant, rewrites the same catalog, ratings and schedules, and prints a new pair of',
    'keys; earlier keys keep working until revoked (npm run cli -- keys revoke KEY_ID). `--json` prints one JSON line.',
  ].join('\n');
}
