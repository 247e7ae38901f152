import { type Kysely, sql } from 'kysely';

// The recommender's inputs (movies, ratings) and outputs (recommendations), all per tenant.
// catalog_versions counts writes to a tenant's movies and ratings, so a worker knows when its model is out of date
// with one primary-key read instead of scanning ratings.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('movies')
    .addColumn('tenant', 'text', (c) => c.notNull().references('tenants.id').onDelete('cascade'))
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('title', 'text', (c) => c.notNull())
    .addColumn('genres', sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn('year', 'integer', (c) => c.check(sql`year between 1870 and 2100`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('movies_pk', ['tenant', 'id'])
    .execute();
  // GET /v1/movies?genre=
  await db.schema.createIndex('movies_genres_idx').on('movies').using('gin').column('genres').execute();

  await db.schema
    .createTable('ratings')
    .addColumn('tenant', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('movie_id', 'text', (c) => c.notNull())
    .addColumn('rating', 'real', (c) => c.notNull().check(sql`rating >= 0.5 and rating <= 5`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    // User-major: a user's ratings are one index range (scoring reads them per job; training pages through them).
    .addPrimaryKeyConstraint('ratings_pk', ['tenant', 'user_id', 'movie_id'])
    .addForeignKeyConstraint('ratings_movie_fk', ['tenant', 'movie_id'], 'movies', ['tenant', 'id'], (c) =>
      c.onDelete('cascade'),
    )
    .execute();
  // Item-major access (per-movie stats, the foreign key's deletes).
  await db.schema.createIndex('ratings_movie_idx').on('ratings').columns(['tenant', 'movie_id']).execute();

  await db.schema
    .createTable('catalog_versions')
    .addColumn('tenant', 'text', (c) => c.primaryKey().references('tenants.id').onDelete('cascade'))
    .addColumn('version', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // The latest result per user; a rerun overwrites it.
  await db.schema
    .createTable('recommendations')
    .addColumn('tenant', 'text', (c) => c.notNull().references('tenants.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('job_id', 'uuid', (c) => c.references('jobs.id').onDelete('set null'))
    .addColumn('items', 'jsonb', (c) => c.notNull())
    .addColumn('strategy', 'text', (c) => c.notNull())
    .addColumn('model_version', 'bigint')
    // Set when the user rates something after this was generated.
    .addColumn('stale', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('generated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('recommendations_pk', ['tenant', 'user_id'])
    .execute();
  await db.schema
    .createIndex('recommendations_job_idx')
    .on('recommendations')
    .column('job_id')
    .where('job_id', 'is not', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('recommendations').execute();
  await db.schema.dropTable('catalog_versions').execute();
  await db.schema.dropTable('ratings').execute();
  await db.schema.dropTable('movies').execute();
}
