import { sql, type Kysely } from 'kysely';

// The file sweeper deletes by expiry: rows with an explicit expires_at, and older rows written without one.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex('files_expires_idx')
    .on('files')
    .column('expires_at')
    .where(sql.ref('expires_at'), 'is not', null)
    .execute();
  await db.schema
    .createIndex('files_no_expiry_idx')
    .on('files')
    .column('created_at')
    .where(sql.ref('expires_at'), 'is', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('files_no_expiry_idx').execute();
  await db.schema.dropIndex('files_expires_idx').execute();
}
