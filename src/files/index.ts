// File records: metadata in PostgreSQL, bytes in Storage. Used by uploads, image variants and reports.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { deleteExpiredFileRows, extendFileExpiry, fileIdsOf, fileRow, upsertFile } from '../db/files.js';
import type { Db } from '../db/index.js';
import type { FileRow, FileVisibility } from '../db/types.js';
import type { Storage } from './storage.js';
import { every, type Service } from '../workers/periodic.js';

const FILE_ID = /^file_[A-Za-z0-9_-]{10,64}$/;

function newFileId(): string {
  return `file_${randomBytes(12).toString('base64url')}`;
}

/** How many leading bytes a content-type sniffer gets (file-type's recommended sample size). */
const SNIFF_BYTES = 4100;

export interface SaveFile {
  tenant: string;
  body: Readable | Buffer;
  /** A type, or a function deciding it from the first SNIFF_BYTES of the body once it is stored. */
  contentType: string | ((head: Buffer) => string | Promise<string>);
  /** When the sweeper may delete the file; unset: FILE_RETENTION_DAYS after it was written. */
  expiresAt?: Date;
  /** Set for files a job produces: a rerun of the job overwrites (same id), never duplicates. */
  jobId?: string;
  /** With jobId: a stable name within the job (e.g. the variant name). */
  name?: string;
  maxBytes?: number;
  /** Who of the tenant may read it; default 'tenant'. A report across every tenant is 'operators'. */
  visibility?: FileVisibility;
}

/** A job's output file has an id derived from the job and the name, so writing it twice is harmless. */
export function jobFileId(jobId: string, name: string): string {
  return `file_${jobId.replace(/-/g, '')}_${name.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 20)}`;
}

export async function saveFile(db: Db, storage: Storage, f: SaveFile): Promise<FileRow> {
  const id = f.jobId && f.name ? jobFileId(f.jobId, f.name) : newFileId();
  const key = `${f.tenant}/${id}`;
  let head: Buffer = Buffer.alloc(0);
  let body = f.body;
  if (typeof f.contentType === 'function') {
    if (Buffer.isBuffer(body)) head = body.subarray(0, SNIFF_BYTES);
    else body = Readable.from(keepHead(body, (h) => (head = h)));
  }
  const stored = await storage.put(key, body, { maxBytes: f.maxBytes });
  try {
    const contentType = typeof f.contentType === 'function' ? await f.contentType(head) : f.contentType;
    const expires_at = f.expiresAt ?? null;
    const visibility = f.visibility ?? 'tenant';
    return await upsertFile(db, {
      id,
      tenant: f.tenant,
      content_type: contentType,
      bytes: stored.bytes,
      sha256: stored.sha256,
      storage_key: key,
      job_id: f.jobId ?? null,
      name: f.name ?? null,
      expires_at,
      visibility,
    });
  } catch (err) {
    // No row, no bytes: an upload that fails leaves nothing behind. A job output is rewritten by the retry.
    if (!f.jobId) await storage.delete(key).catch(() => {});
    throw err;
  }
}

/** Passes the stream through, handing over its first SNIFF_BYTES bytes as they arrive. */
async function* keepHead(source: Readable, onHead: (head: Buffer) => void): AsyncGenerator<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  for await (const chunk of source as AsyncIterable<Buffer>) {
    if (have < SNIFF_BYTES) {
      parts.push(chunk.subarray(0, SNIFF_BYTES - have));
      have += Math.min(chunk.length, SNIFF_BYTES - have);
      onHead(Buffer.concat(parts));
    }
    yield chunk;
  }
}

/** A file by id; with `tenant`, only that tenant's. Malformed ids never reach the query. */
export async function findFile(db: Db, id: string, tenant?: string): Promise<FileRow | undefined> {
  if (!FILE_ID.test(id)) return undefined;
  return fileRow(db, id, tenant);
}

/** Which of `ids` are files of `tenant`: one primary-key lookup for a whole batch. */
export async function tenantFileIds(db: Db, tenant: string, ids: string[]): Promise<Set<string>> {
  const wanted = [...new Set(ids.filter((id) => FILE_ID.test(id)))];
  if (!wanted.length) return new Set();
  return new Set(await fileIdsOf(db, tenant, wanted));
}

export function retentionEnd(retentionDays: number, from = Date.now()): Date {
  return new Date(from + retentionDays * 86_400_000);
}

/** A job reading a file keeps it at least as long as the job's own outputs (never shortens it). */
export async function extendExpiry(db: Db, id: string, until: Date): Promise<void> {
  await extendFileExpiry(db, id, until);
}

/**
 * Deletes up to `limit` expired files: rows first (readers then get a 404, never a row without bytes), then
 * bytes. SKIP LOCKED lets several workers sweep at once without doing the same rows.
 */
export async function deleteExpiredFiles(
  db: Db,
  storage: Storage,
  retentionDays: number,
  limit = 500,
): Promise<number> {
  const cutoff = new Date(Date.now() - retentionDays * 86_400_000);
  const keys = await deleteExpiredFileRows(db, cutoff, limit);
  // A byte file whose delete fails here is an orphan without a row: unreachable, and harmless.
  await Promise.all(keys.map((key) => storage.delete(key).catch(() => {})));
  return keys.length;
}

/** A write still unfinished after this long was abandoned (its process died): uploads and results take far less. */
export const PARTIAL_WRITE_MAX_AGE_MS = 3_600_000;

/** The worker's periodic sweep: a pass now, then one per interval, each pass looping while batches are full. */
export function startFileSweeper(
  deps: { db: Db; storage: Storage; log: Logger; retentionDays: number },
  intervalMs = 10 * 60_000,
): Service {
  let passes = 0;
  return every({ everyMs: intervalMs, what: 'file sweep', log: deps.log, now: true }, async (stopped) => {
    let total = 0;
    for (let n = 500; n === 500 && !stopped(); total += n)
      n = await deleteExpiredFiles(deps.db, deps.storage, deps.retentionDays, 500);
    if (total) deps.log.info({ deleted: total }, 'expired files deleted');
    // Once an hour (at the default interval): partial writes left by a process killed mid-write, an hour after.
    if (passes++ % Math.max(1, Math.round(3_600_000 / intervalMs)) === 0 && deps.storage.sweepPartial) {
      const partial = await deps.storage.sweepPartial(PARTIAL_WRITE_MAX_AGE_MS);
      if (partial) deps.log.info({ deleted: partial }, 'abandoned partial writes deleted');
    }
  });
}
