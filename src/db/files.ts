// File records (metadata; the bytes are in Storage, see src/files/index.ts).
import { sql } from 'kysely';
import type { Db } from './index.js';
import type { FileRow, NewFileRow } from './types.js';

/** Inserts a file's row, or rewrites it when the id exists (a job's output written again by its rerun). */
export async function upsertFile(db: Db, row: NewFileRow): Promise<FileRow> {
  const { content_type, bytes, sha256, expires_at, visibility } = row;
  return db
    .insertInto('files')
    .values(row)
    .onConflict((oc) => oc.column('id').doUpdateSet({ content_type, bytes, sha256, expires_at, visibility }))
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** A file row by id; with `tenant`, only that tenant's. */
export async function fileRow(db: Db, id: string, tenant?: string): Promise<FileRow | undefined> {
  let q = db.selectFrom('files').selectAll().where('id', '=', id);
  if (tenant !== undefined) q = q.where('tenant', '=', tenant);
  return q.executeTakeFirst();
}

/** Which of `ids` are files of `tenant`. */
export async function fileIdsOf(db: Db, tenant: string, ids: string[]): Promise<string[]> {
  const rows = await db.selectFrom('files').select('id').where('id', 'in', ids).where('tenant', '=', tenant).execute();
  return rows.map((r) => r.id);
}

export async function deleteFileRow(db: Db, id: string): Promise<void> {
  await db.deleteFrom('files').where('id', '=', id).execute();
}

/** Moves a file's expiry to `until` unless it is already later (never shortens it). */
export async function extendFileExpiry(db: Db, id: string, until: Date): Promise<void> {
  await db
    .updateTable('files')
    .set({ expires_at: sql<Date>`greatest(coalesce(expires_at, ${until}), ${until})` })
    .where('id', '=', id)
    .execute();
}

/**
 * Deletes up to `limit` rows of files past their expiry (or, without one, created before `cutoff`) and returns their
 * storage keys. SKIP LOCKED lets several workers sweep at once without doing the same rows.
 */
export async function deleteExpiredFileRows(db: Db, cutoff: Date, limit: number): Promise<string[]> {
  const rows = await db
    .deleteFrom('files')
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('files')
        .select('id')
        .where((w) =>
          w.or([w('expires_at', '<=', new Date()), w.and([w('expires_at', 'is', null), w('created_at', '<', cutoff)])]),
        )
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    )
    .returning('storage_key')
    .execute();
  return rows.map((r) => r.storage_key);
}
