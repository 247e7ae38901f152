/*
 * image — payload {file_id, variants?}.
 * Side effects: one stored file per variant, named from the job so a rerun overwrites, never duplicates.
 * Result: {variants: [{name, file_id, width, height, format, bytes}]}.
 */
import { z } from 'zod';
import { defineJob } from './registry.js';

export const imageVariant = z.strictObject({
  name: z.string().regex(/^[a-z0-9_-]{1,32}$/, 'lowercase letters, digits, _ or -, up to 32'),
  width: z.number().int().min(1).max(8192).optional(),
  height: z.number().int().min(1).max(8192).optional(),
  fit: z.enum(['cover', 'contain', 'inside']).optional(),
  format: z.enum(['jpeg', 'png', 'webp', 'avif']).optional(),
  quality: z.number().int().min(1).max(100).optional(),
});

export const imagePayload = z.strictObject({
  file_id: z.string().min(1).max(64),
  variants: z.array(imageVariant).min(1).max(8).optional(),
});

export const image = defineJob({
  type: 'image',
  description: 'Resizes and converts an uploaded image into variants',
  payload: imagePayload,
  attempts: 3,
  backoffMs: 2_000,
  concurrency: 2,
});
