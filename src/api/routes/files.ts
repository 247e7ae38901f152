// POST /v1/files and GET /v1/files/:id. Bytes are streamed to and from storage, never held whole in memory;
// the content type is what the bytes are (file-type), not what the client says they are.
import type { ApiServices } from '../../services.js';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeWebStream } from 'node:stream/web';
import { createRoute, z } from '@hono/zod-openapi';
import busboy from 'busboy';
import { fileTypeFromBuffer } from 'file-type';
import { findFile, retentionEnd, saveFile } from '../../files/index.js';
import { deleteFileRow } from '../../db/files.js';
import type { FileRow } from '../../db/types.js';
import { TooLargeError } from '../../files/storage.js';
import { readsAllTenants } from '../auth.js';
import { problem } from '../errors.js';
import { problems, router, security } from '../openapi.js';

const FileSchema = z
  .object({
    id: z.string(),
    content_type: z
      .string()
      .openapi({ description: 'Sniffed from the bytes; `application/octet-stream` when not recognised' }),
    bytes: z.number().int(),
    sha256: z.string().openapi({ description: 'Hex SHA-256 of the bytes' }),
    expires_at: z
      .string()
      .nullable()
      .openapi({ description: 'When the file is deleted (FILE_RETENTION_DAYS; a job using it extends it)' }),
  })
  .openapi('File');

const FileIdParam = z.object({
  id: z.string().openapi({ param: { name: 'id', in: 'path' }, example: 'file_3q2-7wEVr0P1aLkD' }),
});

// Plain OpenAPI schemas (not zod) on purpose: zod-openapi would parse and buffer a form body to validate it.
const binary = { type: 'string' as const, format: 'binary' };
const uploadContent = {
  'multipart/form-data': { schema: { type: 'object' as const, properties: { file: binary }, required: ['file'] } },
  'application/octet-stream': { schema: binary },
  '*/*': { schema: binary },
};

/** What the bytes are; application/octet-stream when file-type does not know them (text, SVG, unknown binary). */
async function sniff(head: Buffer): Promise<string> {
  const t = head.length ? await fileTypeFromBuffer(head) : undefined;
  return t?.mime ?? 'application/octet-stream';
}

const toApi = (f: FileRow) => ({
  id: f.id,
  content_type: f.content_type,
  bytes: Number(f.bytes),
  sha256: f.sha256,
  expires_at: f.expires_at ? f.expires_at.toISOString() : null,
});

/** Streams the multipart field `file` through `save`; other fields are ignored, a second file is refused. */
function saveMultipart(
  body: Readable,
  contentType: string,
  maxBytes: number,
  save: (file: Readable) => Promise<FileRow>,
): Promise<FileRow> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      // fileSize one past the limit, so storage sees the excess and refuses the whole file.
      bb = busboy({
        headers: { 'content-type': contentType },
        limits: { files: 1, fields: 20, fieldSize: 16 * 1024, parts: 30, fileSize: maxBytes + 1 },
      });
    } catch {
      return reject(problem.badRequest('The multipart body has no boundary.'));
    }
    let saving: Promise<FileRow> | undefined;
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      // Stop reading: an oversized or broken upload is not drained.
      body.unpipe(bb);
      body.destroy();
      reject(err);
    };
    bb.on('file', (field, file) => {
      if (field !== 'file' || saving) return void file.resume();
      saving = save(file);
      saving.catch(fail);
    });
    bb.on('filesLimit', () => fail(problem.badRequest('Send one file per request, in the field `file`.')));
    bb.on('error', () => fail(problem.badRequest('The multipart body is malformed.')));
    bb.on('close', () => {
      if (!saving)
        return fail(problem.validation([{ path: 'file', message: 'a multipart field named `file` is required' }]));
      saving.then((row) => {
        settled = true;
        resolve(row);
      }, fail);
    });
    body.on('error', fail);
    body.pipe(bb);
  });
}

export function filesRoutes(deps: ApiServices) {
  const app = router();
  const { db, storage, config } = deps;
  const max = config.MAX_UPLOAD_BYTES;

  app.openapi(
    createRoute({
      method: 'post',
      path: '/files',
      summary: 'Upload a file',
      description: `A raw body, or a multipart/form-data field \`file\`; up to MAX_UPLOAD_BYTES (${max} bytes here), else 413 and nothing is kept.`,
      security,
      request: { body: { required: true, content: uploadContent } },
      responses: {
        201: { description: 'Stored', content: { 'application/json': { schema: FileSchema } } },
        ...problems(400, 401, 413, 503),
      },
    }),
    async (c) => {
      const principal = c.get('principal');
      const type = c.req.header('content-type') ?? 'application/octet-stream';
      const multipart = /^multipart\/form-data/i.test(type);
      const declared = Number(c.req.header('content-length'));
      // Refuse early what cannot fit (a multipart envelope adds a little around the file).
      if (Number.isFinite(declared) && declared > max + (multipart ? 64 * 1024 : 0)) throw tooLarge(max);
      const raw = c.req.raw.body;
      if (!raw)
        throw problem.badRequest('The body is empty: send the file as the body or as the multipart field `file`.');
      const body = Readable.fromWeb(raw as unknown as NodeWebStream<Uint8Array>);
      const save = (file: Readable) =>
        saveFile(db, storage, {
          tenant: principal.tenant,
          body: file,
          contentType: sniff,
          maxBytes: max,
          expiresAt: retentionEnd(config.FILE_RETENTION_DAYS),
        });
      let row: FileRow;
      try {
        row = multipart ? await saveMultipart(body, type, max, save) : await save(body);
      } catch (err) {
        if (err instanceof TooLargeError) throw tooLarge(max);
        // The client went away mid-upload: its problem, not a 500 (storage has already removed the partial file).
        const code = (err as { code?: string }).code;
        if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (err as Error).name === 'AbortError') {
          throw problem.badRequest('The upload was interrupted.');
        }
        throw err;
      }
      if (row.bytes === 0) {
        await storage.delete(row.storage_key);
        await deleteFileRow(db, row.id);
        throw problem.badRequest('The file is empty.');
      }
      return c.json(toApi(row), 201, { Location: `/v1/files/${row.id}` });
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/files/{id}',
      summary: 'Download a file',
      security,
      request: { params: FileIdParam },
      responses: {
        200: {
          description: 'The bytes, with their sniffed content type',
          content: { 'application/octet-stream': { schema: binary } },
        },
        304: { description: 'Not modified (If-None-Match matched the ETag, the sha256)' },
        ...problems(401, 404, 503),
      },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      const principal = c.get('principal');
      const everyTenant = readsAllTenants(principal);
      const row = await findFile(db, id, everyTenant ? undefined : principal.tenant);
      // An operators-only file (a report across every tenant) is, to anyone else, not there.
      if (!row || (row.visibility === 'operators' && !everyTenant)) throw problem.notFound('file');
      const etag = `"${row.sha256}"`;
      // Variants are fetched again and again by browsers and CDNs: the sha256 is a strong validator.
      if (
        c.req
          .header('if-none-match')
          ?.split(',')
          .some((t) => t.trim() === etag)
      ) {
        return c.body(null, 304, { ETag: etag, 'Cache-Control': 'private, max-age=3600' });
      }
      const stream = await storage.get(row.storage_key).catch(() => undefined);
      // A row whose bytes are gone is being swept: as good as not found.
      if (!stream) throw problem.notFound('file');
      return new Response(Readable.toWeb(stream) as unknown as ReadableStream, {
        status: 200,
        headers: {
          'Content-Type': row.content_type,
          'Content-Length': String(row.bytes),
          ETag: etag,
          'Cache-Control': 'private, max-age=3600',
          'Content-Disposition': contentDisposition(row),
          // Uploaded bytes are never run as a page in the API's origin.
          'X-Content-Type-Options': 'nosniff',
          'Content-Security-Policy': "default-src 'none'; sandbox",
        },
      });
    },
  );

  return app;
}

const EXTENSIONS: Record<string, string> = {
  'image/jpeg': 'jpg',
  'image/png': 'png',
  'image/webp': 'webp',
  'image/avif': 'avif',
  'image/gif': 'gif',
  'image/tiff': 'tiff',
  'text/csv': 'csv',
  'application/pdf': 'pdf',
  'text/plain': 'txt',
  'application/json': 'json',
  'message/rfc822': 'eml',
};

/**
 * A download's name: a job's output after its name within the job (a report `jobs-2026-12-01.csv`, an image variant
 * `thumb.webp`), an upload after its id, each with the extension of its content type. Images open in the browser,
 * everything else downloads.
 */
function contentDisposition(row: { id: string; name: string | null; content_type: string }): string {
  const type = row.content_type.split(';')[0].trim().toLowerCase();
  const base = (row.name ?? row.id).replace(/[^A-Za-z0-9._-]/g, '_');
  const filename = `${base}.${EXTENSIONS[type] ?? 'bin'}`;
  return `${type.startsWith('image/') ? 'inline' : 'attachment'}; filename="${filename}"`;
}

function tooLarge(max: number) {
  const err = problem.tooLarge(`Uploads are limited to ${max} bytes.`);
  (err.headers as Record<string, string>).Connection = 'close';
  return err;
}
