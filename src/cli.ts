// Admin CLI: npm run cli -- <command>. Each command prints one JSON line on success, except `seed --demo`, which
// prints `export …` lines for a shell (one JSON line with --json).
import { parseArgs } from 'node:util';
import { createKey, createTenant, revokeKey } from './auth/keys.js';
import { announceRevocationOnce } from './auth/revocation.js';
import { loadConfigOrExit, type Config } from './config.js';
import { createDb, type Db } from './db/index.js';

type Command = (ctx: { config: Config; db: Db; args: string[] }) => Promise<unknown>;

const USAGE = `usage:
  cli tenants create NAME
  cli keys create --tenant NAME --role client|operator|viewer
  cli keys revoke KEY_ID
  cli seed --demo [--json]
  cli prune`;

class UsageError extends Error {}

const commands: Record<string, Command> = {
  'tenants create': async ({ db, args }) => {
    const [name] = args;
    if (!name) throw new UsageError('tenants create needs a NAME');
    return createTenant(db, name);
  },
  'keys create': async ({ db, config, args }) => {
    const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, role: { type: 'string' } } });
    if (!values.tenant) throw new UsageError('keys create needs --tenant NAME');
    if (values.role !== 'client' && values.role !== 'operator' && values.role !== 'viewer')
      throw new UsageError('keys create needs --role client, --role operator or --role viewer');
    const tenant = await db.selectFrom('tenants').select('id').where('id', '=', values.tenant).executeTakeFirst();
    if (!tenant)
      throw new UsageError(`no tenant named ${values.tenant}; create it with: cli tenants create ${values.tenant}`);
    return createKey(db, config.API_KEY_SECRET, values.tenant, values.role);
  },
  'keys revoke': async ({ db, config, args }) => {
    const [id] = args;
    if (!id) throw new UsageError('keys revoke needs a KEY_ID');
    if (!(await revokeKey(db, id))) throw new UsageError(`no active key with id ${id}`);
    // API processes drop the key from their caches now; without Redis they do within a few seconds anyway.
    const announced = await announceRevocationOnce(config, id);
    return {
      id,
      revoked: true,
      ...(announced ? {} : { note: 'Redis unreachable: API processes stop accepting the key within 5 s' }),
    };
  },
  // One retention pass now (JOB_RETENTION_DAYS, AUDIT_RETENTION_DAYS, RETENTION_BATCH), as workers run every interval.
  prune: async ({ db, config }) => {
    const { pruneOnce, retentionOptions } = await import('./workers/retention.js');
    const result = await pruneOnce(db, retentionOptions(config));
    return result ? { ran: true, ...result } : { ran: false, reason: 'another retention pass holds the lock' };
  },
  seed: async (ctx) => {
    const { seed, seedReport } = await import('./seed.js');
    const result = await seed(ctx);
    if (ctx.args.includes('--json')) return result;
    console.log(seedReport(result, ctx.config));
    return undefined;
  },
};

const [a, b, ...rest] = process.argv.slice(2);
const name = commands[`${a} ${b}`] ? `${a} ${b}` : a;
const command = commands[name];
if (!command) {
  console.error(USAGE);
  process.exit(2);
}
const config = loadConfigOrExit();
const db = createDb(config.DATABASE_URL, 2);
try {
  const args = name === a ? [b, ...rest].filter((x) => x !== undefined) : rest;
  const result = await command({ config, db, args });
  if (result !== undefined) console.log(JSON.stringify(result));
} catch (err) {
  if (err instanceof UsageError) {
    console.error(`${err.message}\n${USAGE}`);
    process.exitCode = 2;
  } else if ((err as { code?: string }).code === '23505') {
    console.error(`already exists: ${(err as Error & { detail?: string }).detail ?? (err as Error).message}`);
    process.exitCode = 1;
  } else {
    console.error(`failed: ${(err as Error).message}`);
    process.exitCode = 1;
  }
} finally {
  await db.destroy();
}
