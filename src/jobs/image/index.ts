/*
 * image — payload {file_id, variants?} (default: thumb 128, medium 512, large 1280, webp).
 * Side effects: one stored file per variant, named from the job so a rerun overwrites, never duplicates;
 * the source file's expiry is pushed out to the outputs' (it is what a rerun would read).
 * Result: {variants: [{name, file_id, width, height, format, bytes}]} with the real dimensions and sizes.
 * Hostile input fails at once (no retries) with error.code image_too_large, unsupported_image,
 * image_corrupt or file_not_found; the header is checked before any pixel is decoded.
 */
import { z } from 'zod';
import { extendExpiry, findFile, retentionEnd, saveFile } from '../../files/index.js';
import { defineJob } from '../registry.js';
import { PermanentError } from '../../errors.js';

const imageVariant = z.strictObject({
  // 20: the name is part of the output's job-derived file id, which keeps 20 characters of it.
  name: z.string().regex(/^[a-z0-9_-]{1,20}$/, 'lowercase letters, digits, _ or -, up to 20'),
  width: z.number().int().min(1).max(8192).optional(),
  height: z.number().int().min(1).max(8192).optional(),
  fit: z.enum(['cover', 'contain', 'inside']).optional(),
  format: z.enum(['jpeg', 'png', 'webp', 'avif']).optional(),
  quality: z.number().int().min(1).max(100).optional(),
});

export const imagePayload = z.strictObject({
  file_id: z.string().min(1).max(64),
  variants: z
    .array(imageVariant)
    .min(1)
    .max(8)
    .refine((vs) => new Set(vs.map((v) => v.name)).size === vs.length, 'variant names must be unique')
    .optional(),
});

export interface ImageResult {
  variants: { name: string; file_id: string; width: number; height: number; format: string; bytes: number }[];
}

export const image = defineJob({
  type: 'image',
  description: 'Resizes and converts an uploaded image into variants',
  payload: imagePayload,
  attempts: 3,
  backoffMs: 2_000,
  // Two cores: two images at a time, one libvips thread each (see src/jobs/image/pipeline.ts).
  concurrency: 2,
  timeoutMs: 5 * 60_000,
  maxTimeoutMs: 30 * 60_000,
  async process(ctx): Promise<ImageResult> {
    // Lazy: the API process registers this type too, and must not load libvips for it.
    const { DEFAULT_VARIANTS, MIME, probe, renderVariant } = await import('./pipeline.js');
    const { db, storage, config } = ctx.deps;
    const source = await findFile(db, ctx.payload.file_id, ctx.tenant);
    if (!source) throw new PermanentError('file_not_found', `no file ${ctx.payload.file_id} for this tenant`);
    // A local path lets libvips read only what it needs (a JPEG header, then shrink-on-load).
    const input = storage.localPath
      ? storage.localPath(source.storage_key)
      : await readAll(await storage.get(source.storage_key), source.bytes);
    const expiresAt = retentionEnd(config.FILE_RETENTION_DAYS);
    await Promise.all([probe(input, config.IMAGE_MAX_PIXELS), extendExpiry(db, source.id, expiresAt)]);

    const variants = ctx.payload.variants ?? DEFAULT_VARIANTS;
    const result: ImageResult = { variants: [] };
    // Storing a variant (file, row, progress: several round trips) overlaps with rendering the next one, so
    // the cores stay on pixels; at most one save is in flight and they finish in order.
    let saving: Promise<void> = Promise.resolve();
    for (const [i, v] of variants.entries()) {
      ctx.signal.throwIfAborted();
      const out = await renderVariant(input, v, config.IMAGE_MAX_PIXELS);
      await saving;
      saving = (async () => {
        const row = await saveFile(db, storage, {
          tenant: ctx.tenant,
          body: out.data,
          contentType: MIME[out.format],
          jobId: ctx.id,
          name: v.name,
          expiresAt,
        });
        result.variants.push({
          name: v.name,
          file_id: row.id,
          width: out.width,
          height: out.height,
          format: out.format,
          bytes: out.bytes,
        });
        ctx.jobLog(`variant ${v.name}: ${out.width}x${out.height} ${out.format}, ${out.bytes} bytes`, {
          ...v,
          file_id: row.id,
        });
        // The last step is the ledger's own 100 on success.
        if (i < variants.length - 1) await ctx.progress(((i + 1) * 100) / variants.length);
      })();
      // Handled here so a failure while the next variant renders is not an unhandled rejection; awaited below.
      saving.catch(() => {});
    }
    await saving;
    return result;
  },
});

async function readAll(stream: AsyncIterable<Buffer>, expected: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk);
  const buf = Buffer.concat(parts);
  if (buf.length !== expected) throw new PermanentError('file_missing', 'the stored bytes of the file are incomplete');
  return buf;
}
