// Entry point of the `release` process: create the database if missing, then run migrations.
import { loadConfigOrExit } from './config.js';
import { createDb } from './db/index.js';
import { ensureDatabase, migrateToLatest } from './db/migrate.js';

const config = loadConfigOrExit();
try {
  if (await ensureDatabase(config.DATABASE_URL))
    console.log(`created database ${new URL(config.DATABASE_URL).pathname.slice(1)}`);
  const db = createDb(config.DATABASE_URL, 1);
  try {
    const { results } = await migrateToLatest(db);
    for (const r of results ?? []) console.log(`migration ${r.migrationName}: ${r.status}`);
    console.log(results?.length ? `migrated (${results.length} applied)` : 'database is up to date');
  } finally {
    await db.destroy();
  }
} catch (err) {
  console.error(`migration failed: ${(err as Error).message}`);
  process.exit(1);
}
