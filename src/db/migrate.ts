import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Migrator, type Migration, type MigrationProvider, type MigrationResultSet } from 'kysely';
import pg from 'pg';
import type { Db } from './index.js';

const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

/** Creates the database named in the URL when it is missing (connecting to the server's `postgres` db). */
export async function ensureDatabase(connectionString: string): Promise<boolean> {
  const url = new URL(connectionString);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!name) throw new Error('DATABASE_URL names no database');
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (rowCount) return false;
    try {
      await client.query(`create database "${name.replaceAll('"', '""')}"`);
    } catch (err) {
      // Another process created it between our check and our create.
      if ((err as { code?: string }).code !== '42P04') throw err;
    }
    return true;
  } finally {
    await client.end();
  }
}

/** Like kysely's FileMigrationProvider, but importing from here so TypeScript migrations load under tsx and vitest alike. */
const provider: MigrationProvider = {
  async getMigrations() {
    const files = (await fs.readdir(MIGRATIONS_DIR))
      .filter((f) => /\.(ts|js|mjs)$/.test(f) && !f.endsWith('.d.ts'))
      .sort();
    const entries = await Promise.all(
      files.map(
        async (f) =>
          [
            f.replace(/\.(ts|js|mjs)$/, ''),
            (await import(pathToFileURL(path.join(MIGRATIONS_DIR, f)).href)) as Migration,
          ] as const,
      ),
    );
    return Object.fromEntries(entries);
  },
};

function createMigrator(db: Db): Migrator {
  return new Migrator({
    db,
    provider,
    // Feature branches add dated migrations side by side; apply whichever are missing.
    allowUnorderedMigrations: true,
  });
}

export async function migrateToLatest(db: Db): Promise<MigrationResultSet> {
  const result = await createMigrator(db).migrateToLatest();
  if (result.error) throw result.error;
  return result;
}

/** Names of migrations in migrations/ that this database has not run yet. */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const all = await createMigrator(db).getMigrations();
  return all.filter((m) => !m.executedAt).map((m) => m.name);
}
