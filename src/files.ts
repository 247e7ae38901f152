// File records: metadata in PostgreSQL, bytes in Storage. Used by uploads, image variants and reports.
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Db } from './db/index.js';
import type { FileRow } from './db/types.js';
import type { Storage } from './storage.js';

export const FILE_ID = /^file_[A-Za-z0-9_-]{10,64}$/;

export function newFileId(): string {
  return `file_${randomBytes(12).toString('base64url')}`;
}

export interface SaveFile {
  tenant: string;
  body: Readable | Buffer;
  contentType: string;
  /** Set for files a job produces: a rerun of the job overwrites (same id), never duplicates. */
  jobId?: string;
  /** With jobId: a stable name within the job (e.g. the variant name). */
  name?: string;
  maxBytes?: number;
}

/** A job's output file has an id derived from the job and the name, so writing it twice is harmless. */
export function jobFileId(jobId: string, name: string): string {
  return `file_${jobId.replace(/-/g, '')}_${name.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 20)}`;
}

export async function saveFile(db: Db, storage: Storage, f: SaveFile): Promise<FileRow> {
  const id = f.jobId && f.name ? jobFileId(f.jobId, f.name) : newFileId();
  const key = `${f.tenant}/${id}`;
  const stored = await storage.put(key, f.body, { maxBytes: f.maxBytes });
  return db
    .insertInto('files')
    .values({
      id,
      tenant: f.tenant,
      content_type: f.contentType,
      bytes: stored.bytes,
      sha256: stored.sha256,
      storage_key: key,
      job_id: f.jobId ?? null,
      name: f.name ?? null,
    })
    .onConflict((oc) => oc.column('id').doUpdateSet({ content_type: f.contentType, bytes: stored.bytes, sha256: stored.sha256 }))
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** A file by id; with `tenant`, only that tenant's. Malformed ids never reach the query. */
export async function findFile(db: Db, id: string, tenant?: string): Promise<FileRow | undefined> {
  if (!FILE_ID.test(id)) return undefined;
  let q = db.selectFrom('files').selectAll().where('id', '=', id);
  if (tenant !== undefined) q = q.where('tenant', '=', tenant);
  return q.executeTakeFirst();
}
