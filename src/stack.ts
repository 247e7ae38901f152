// `npm start`: check the services, migrate, then run every Procfile process in this terminal (node-foreman).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Redis } from 'ioredis';
import { loadConfigOrExit } from './config.js';
import { createDb } from './db/index.js';
import { ensureDatabase, migrateToLatest } from './db/migrate.js';
import { logEnvForChildren } from './log.js';

const config = loadConfigOrExit();

async function check(name: string, probe: () => Promise<unknown>, howToStart: string) {
  try {
    await probe();
  } catch (err) {
    console.error(
      `\n${name} is not reachable: ${(err as Error).message}\nStart it, for example:\n  ${howToStart}\nor point the environment at a running one.\n`,
    );
    process.exit(1);
  }
}

await check(
  `Redis (REDIS_URL=${config.REDIS_URL})`,
  async () => {
    const r = new Redis(config.REDIS_URL.split(',')[0], {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      connectTimeout: 3_000,
    });
    r.on('error', () => {});
    try {
      await r.connect();
      await r.ping();
    } finally {
      r.disconnect();
    }
  },
  'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
);
await check(
  `PostgreSQL (DATABASE_URL=${config.DATABASE_URL.replace(/:[^:@/]*@/, ':***@')})`,
  async () => {
    if (await ensureDatabase(config.DATABASE_URL)) console.log('created the database');
    const db = createDb(config.DATABASE_URL, 1);
    try {
      await migrateToLatest(db);
    } finally {
      await db.destroy();
    }
  },
  'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
);
console.log('database migrated');
console.log(
  `API: http://localhost:${config.PORT}   docs: http://localhost:${config.PORT}/docs   dashboard: http://localhost:${config.PORT}/admin/queues`,
);
console.log(`Console: http://localhost:${config.PORT}/console (log in with an API key)`);
console.log('Create a key: npm run cli -- seed --demo      Stop: Ctrl-C\n');

// node-foreman runs the Procfile; web is listed first so it gets PORT.
const nf = path.join(path.dirname(createRequire(import.meta.url).resolve('foreman/package.json')), 'nf.js');
const child = spawn(process.execPath, [nf, 'start', '-p', String(config.PORT), 'web,worker'], {
  stdio: 'inherit',
  env: { ...process.env, ...logEnvForChildren(config, Boolean(process.stdout.isTTY)) },
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
child.on('exit', (code) => process.exit(code ?? 0));
