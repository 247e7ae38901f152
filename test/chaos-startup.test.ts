// Start-up checks of real `web` and `worker` processes: a database behind on migrations or out of reach is a refusal
// to start, with a message saying what to do; a Redis that may evict keys is a loud warning.
import { sql } from 'kysely';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateToLatest } from '../src/db/migrate.js';
import { createTestEnv, startProcess, type TestEnv } from './helpers.js';
import { privateRedis, type PrivateRedis } from './support/private-redis.js';

let env: TestEnv;
let redis: PrivateRedis;

beforeAll(async () => {
  env = await createTestEnv('chaos_startup');
  redis = await privateRedis();
});

afterAll(async () => {
  await env?.close();
  await redis?.stop();
});

async function refusal(kind: 'web' | 'worker', extra: Record<string, string> = {}): Promise<string> {
  const err = await startProcess(kind, env.env, extra).then(
    async (p) => {
      await p.stop();
      return undefined;
    },
    (e: Error) => e,
  );
  expect(err, `${kind} should refuse to start`).toBeInstanceOf(Error);
  return err!.message;
}

describe('start-up checks', () => {
  it('refuses to start web and worker while the database is behind on migrations', async () => {
    const [last] = await sql<{ name: string }>`select name from kysely_migration order by name desc limit 1`
      .execute(env.db)
      .then((r) => r.rows);
    await sql`delete from kysely_migration where name = ${last.name}`.execute(env.db);
    try {
      for (const message of [await refusal('web'), await refusal('worker')]) {
        expect(message).toMatch(/behind by 1 migration/);
        expect(message).toContain(last.name);
        expect(message).toMatch(/npm run migrate/);
      }
    } finally {
      // Put the row back as the migrator would (the migration's objects are still there).
      await sql`insert into kysely_migration (name, timestamp) values (${last.name}, ${new Date().toISOString()})`.execute(
        env.db,
      );
    }
    await migrateToLatest(env.db);
    const web = await startProcess('web', env.env);
    await web.stop();
  });

  it('refuses to start when PostgreSQL is out of reach, naming it', async () => {
    const message = await refusal('web', { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nothing' });
    expect(message).toMatch(/PostgreSQL is not reachable/);
  });

  it('warns loudly when Redis may evict keys (maxmemory-policy other than noeviction), and still starts', async () => {
    const admin = new Redis(redis.url);
    await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
    admin.disconnect();
    // One after the other: two cold starts at once can outlast startProcess's patience on a loaded machine.
    const web = await startProcess('web', { ...env.env, REDIS_URL: redis.url });
    const ok = await startProcess('web', env.env).catch(async (err) => {
      await web.stop();
      throw err;
    });
    try {
      const warning = web
        .output()
        .split('\n')
        .find((l) => l.includes('maxmemory-policy'));
      expect(warning).toBeDefined();
      expect(JSON.parse(warning!)).toMatchObject({ level: 40, policy: 'allkeys-lru' });
      expect(warning).toMatch(/BullMQ may lose jobs/);
      // The shared Redis is configured as it should be: no warning there.
      expect(ok.output()).not.toMatch(/maxmemory-policy/);
    } finally {
      await Promise.all([web.stop(), ok.stop()]);
    }
  });
});
