// `cli seed --demo`: a demo tenant with keys. The catalog and ratings come with the recommendations work.
import { createKey, createTenant } from './auth/keys.js';
import type { Config } from './config.js';
import type { Db } from './db/index.js';

export async function seed({ config, db, args }: { config: Config; db: Db; args: string[] }) {
  if (!args.includes('--demo')) throw new Error('seed needs --demo');
  const exists = await db.selectFrom('tenants').select('id').where('id', '=', 'demo').executeTakeFirst();
  const tenant = exists ? { tenant: 'demo' } : await createTenant(db, 'demo');
  const client = await createKey(db, config.API_KEY_SECRET, 'demo', 'client');
  const operator = await createKey(db, config.API_KEY_SECRET, 'demo', 'operator');
  return { ...tenant, client_key: client.key, operator_key: operator.key };
}
