// Admin CLI: npm run cli -- <command>. Each command prints one JSON line on success, except `seed --demo`, which
// prints `export …` lines for a shell (one JSON line with --json).
import { parseArgs } from 'node:util';
import { createKey, createTenant, revokeKey } from './auth/keys.js';
import { announceRevocationOnce } from './auth/revocation.js';
import { loadConfigOrExit, type Config } from './config.js';
import { getTenantLimits, setTenantLimits } from './db/admission.js';
import { recordAudit } from './db/audit.js';
import { createDb, type Db } from './db/index.js';
import { tenantExists } from './db/tenants.js';
import { ROLES } from './domain.js';

type Command = (ctx: { config: Config; db: Db; args: string[] }) => Promise<unknown>;

const USAGE = `usage:
  cli tenants create NAME
  cli keys create --tenant NAME --role client|operator|viewer
  cli keys revoke KEY_ID
  cli limits show TENANT
  cli limits set TENANT [--type TYPE --max-running N|default] [--weight W|default]
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
    const role = ROLES.find((r) => r === values.role);
    if (!role) throw new UsageError('keys create needs --role client, --role operator or --role viewer');
    if (!(await tenantExists(db, values.tenant)))
      throw new UsageError(`no tenant named ${values.tenant}; create it with: cli tenants create ${values.tenant}`);
    return createKey(db, config.API_KEY_SECRET, values.tenant, role);
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
  'limits show': async ({ db, args }) => {
    const [tenant] = args;
    if (!tenant) throw new UsageError('limits show needs a TENANT');
    const limits = await getTenantLimits(db, tenant);
    if (!limits) throw new UsageError(`no tenant named ${tenant}`);
    return { tenant, ...limits };
  },
  'limits set': async ({ db, config, args }) => {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { type: { type: 'string' }, 'max-running': { type: 'string' }, weight: { type: 'string' } },
    });
    const [tenant] = positionals;
    if (!tenant) throw new UsageError('limits set needs a TENANT');
    const change: { weight?: number | null; max_running?: Record<string, number | null> } = {};
    if (values.weight !== undefined) {
      const w = Number(values.weight);
      if (values.weight !== 'default' && !(w > 0 && w <= 1000))
        throw new UsageError('--weight must be a number > 0 and ≤ 1000, or default');
      change.weight = values.weight === 'default' ? null : w;
    }
    if (values['max-running'] !== undefined || values.type !== undefined) {
      const raw = values['max-running'];
      if (!values.type || raw === undefined) throw new UsageError('--type and --max-running go together');
      const { createRegistry, loadJobModules } = await import('./jobs/index.js');
      const registry = await loadJobModules(createRegistry(), config.jobModules);
      if (!registry.get(values.type))
        throw new UsageError(`unknown job type ${values.type}; one of: ${registry.types().join(', ')}`);
      const n = Number(raw);
      if (raw !== 'default' && !(Number.isInteger(n) && n >= 0 && n <= 1_000_000))
        throw new UsageError('--max-running must be an integer from 0 to 1000000, or default');
      change.max_running = { [values.type]: raw === 'default' ? null : n };
    }
    if (change.weight === undefined && !change.max_running)
      throw new UsageError('limits set needs --weight or --type with --max-running');
    const limits = await db.transaction().execute(async (trx) => {
      const after = await setTenantLimits(trx, tenant, change);
      if (after)
        await recordAudit(trx, {
          actor: undefined,
          surface: 'cli',
          action: 'tenant.limits',
          target_kind: 'tenant',
          target: tenant,
          detail: change,
        });
      return after;
    });
    if (!limits) throw new UsageError(`no tenant named ${tenant}`);
    return { tenant, ...limits };
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
