// A private, migrated database for unit-level test files that must stay light (no ./helpers.js, which loads the whole
// app and is most of a file's time under mutation testing, `npm run test:mutation`). Under Stryker a run that times
// out is killed before afterAll: one database per Stryker worker, made afresh by each run, leaves at most one behind
// per worker rather than one per timed-out mutant.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createDb, type Db } from '../../src/db/index.js';
import { ensureDatabase, migrateToLatest } from '../../src/db/migrate.js';

export interface UnitDb {
  db: Db;
  close(): Promise<void>;
}

const worker = process.env.STRYKER_MUTATOR_WORKER;

/** The file's database name (also usable as its queue prefix): `<label>_<random>`, or `<label>_stryker_<N>`. */
export function unitDbName(label: string): string {
  return worker === undefined ? `${label}_${randomBytes(4).toString('hex')}` : `${label}_stryker_${worker}`;
}

/** Creates (under Stryker: recreates) the database `name`, migrated, with the tenants named. */
export async function unitDb(name: string, tenants: string[]): Promise<UnitDb> {
  const url = `${process.env.TEST_PG_URL_BASE ?? 'postgres://postgres@127.0.0.1:5432'}/${name}`;
  const drop = async () => {
    const admin = new pg.Client({ connectionString: url.replace(/\/[^/]+$/, '/postgres') });
    await admin.connect();
    await admin.query(`drop database if exists "${name}" with (force)`);
    await admin.end();
  };
  if (worker !== undefined) await drop();
  await ensureDatabase(url);
  const db = createDb(url, 2);
  await migrateToLatest(db);
  // Rows, not createTenant: a mutant of it failing here would fail no test (a failed beforeAll skips them).
  await db
    .insertInto('tenants')
    .values(tenants.map((id) => ({ id, webhook_secret: `whsec_${id}` })))
    .execute();
  return {
    db,
    async close() {
      await db.destroy();
      await drop();
    },
  };
}
