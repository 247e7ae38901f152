// The sharp pipeline for image jobs, and the process-wide libvips settings that make it safe and fast.
// Loaded only by workers (the image job imports it lazily), so the web process never loads libvips.
import sharp, { type FitEnum, type Metadata, type ResizeOptions, type Sharp } from 'sharp';
import { PermanentError, RetryableError } from '../../errors.js';
import { withSpan } from '../../tracing/index.js';

export type OutputFormat = 'jpeg' | 'png' | 'webp' | 'avif';

export interface Variant {
  name: string;
  width?: number;
  height?: number;
  fit?: 'cover' | 'contain' | 'inside';
  format?: OutputFormat;
  quality?: number;
}

/** docs/api.md: thumb 128, medium 512, large 1280, webp. The size bounds the longest side (fit inside). */
export const DEFAULT_VARIANTS: readonly Variant[] = [
  { name: 'thumb', width: 128, height: 128, fit: 'inside', format: 'webp' },
  { name: 'medium', width: 512, height: 512, fit: 'inside', format: 'webp' },
  { name: 'large', width: 1280, height: 1280, fit: 'inside', format: 'webp' },
];

export const MIME: Record<OutputFormat, string> = {
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  avif: 'image/avif',
};

/** Input formats we decode, as sharp's metadata names them (heif: AVIF only, as the bundled libheif has no HEVC). */
const INPUT_FORMATS = new Set(['jpeg', 'png', 'webp', 'heif', 'gif', 'tiff']);

/**
 * Loaders that stay enabled; every other libvips loader (SVG, PDF, ImageMagick, FITS, Matlab, raw camera…)
 * is blocked for the whole process. SVG is therefore refused outright, so no href is ever resolved.
 */
const ALLOWED_LOADERS = [
  'VipsForeignLoadJpeg',
  'VipsForeignLoadPng',
  'VipsForeignLoadWebp',
  'VipsForeignLoadHeif',
  'VipsForeignLoadNsgif',
  'VipsForeignLoadTiff',
];

/** A single pipeline may not run longer than this (a pathological input must not hold a slot forever). */
const TIMEOUT_SECONDS = 120;

let configured = false;

/**
 * Process-wide libvips settings, applied once. On 2 cores the parallelism comes from jobs (image
 * concurrency 2), one libvips thread each, so two images fill the two cores without threads contending
 * inside one image (sharp's advice when many images run at once). Each pipeline holds one libuv thread:
 * the default UV_THREADPOOL_SIZE of 4 leaves two for fs work; raise it with WORKER_CONCURRENCY image=N>2.
 * The operation cache rarely hits (each variant shrinks on load differently), so it is kept small, and
 * `files: 0` keeps no deleted upload open.
 */
export function configureSharp(): void {
  if (configured) return;
  configured = true;
  sharp.block({ operation: ['VipsForeignLoad'] });
  sharp.unblock({ operation: ALLOWED_LOADERS });
  sharp.concurrency(1);
  sharp.cache({ memory: 32, files: 0, items: 50 });
}

export interface Probe {
  format: string;
  width: number;
  height: number;
}

/** Reads the header only: format and dimensions are checked before a single pixel is decoded. */
export async function probe(input: string | Buffer, maxPixels: number): Promise<Probe> {
  configureSharp();
  let m: Metadata;
  try {
    // Header only, no pixels: the size check below gives the clearer message.
    m = await sharp(input, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw imageError(err);
  }
  if (!m.format || !INPUT_FORMATS.has(m.format) || (m.format === 'heif' && m.compression !== 'av1')) {
    throw new PermanentError(
      'unsupported_image',
      `not an accepted image format (${m.format ?? 'unknown'}); accepted: jpeg, png, webp, avif, gif, tiff`,
    );
  }
  const width = m.autoOrient?.width ?? m.width ?? 0;
  const height = m.autoOrient?.height ?? m.height ?? 0;
  if (!width || !height) throw new PermanentError('image_corrupt', 'the image has no dimensions');
  if (width * height > maxPixels) {
    throw new PermanentError(
      'image_too_large',
      `${width}x${height} is more than the ${maxPixels} pixels an input may have`,
    );
  }
  return { format: m.format, width, height };
}

/** The resolved settings of one variant: what the job does, and what the benchmark's bare loop repeats. */
function variantSettings(v: Variant) {
  const format: OutputFormat = v.format ?? 'webp';
  const resize: ResizeOptions | undefined =
    v.width || v.height
      ? {
          width: v.width,
          height: v.height,
          fit: (v.fit ?? 'inside') as keyof FitEnum,
          // Never upscale: a variant is at most the source's size; the result reports the real dimensions.
          withoutEnlargement: true,
          background: format === 'jpeg' ? '#ffffff' : { r: 0, g: 0, b: 0, alpha: 0 },
        }
      : undefined;
  const output = v.quality !== undefined ? { quality: v.quality } : {};
  return { format, resize, output };
}

/** One variant: auto-rotated from EXIF, resized, converted; metadata stripped (sharp keeps none unless asked). */
function variantPipeline(input: string | Buffer, v: Variant, maxPixels: number): Sharp {
  configureSharp();
  const s = variantSettings(v);
  let p = sharp(input, { limitInputPixels: maxPixels, autoOrient: true }).timeout({ seconds: TIMEOUT_SECONDS });
  if (s.resize) p = p.resize(s.resize);
  return p.toFormat(s.format, s.output);
}

export interface Rendered {
  data: Buffer;
  width: number;
  height: number;
  format: OutputFormat;
  bytes: number;
}

export function renderVariant(input: string | Buffer, v: Variant, maxPixels: number): Promise<Rendered> {
  return withSpan('sharp render', { 'image.variant': v.name, 'image.format': variantSettings(v).format }, async () => {
    try {
      const { data, info } = await variantPipeline(input, v, maxPixels).toBuffer({ resolveWithObject: true });
      return { data, width: info.width, height: info.height, format: variantSettings(v).format, bytes: info.size };
    } catch (err) {
      throw imageError(err);
    }
  });
}

/** libvips speaks in messages; the ledger wants a code, and to know whether a retry could ever help. */
function imageError(err: unknown): Error {
  if (err instanceof PermanentError || err instanceof RetryableError) return err;
  const message = String((err as Error)?.message ?? err)
    .split('\n')[0]
    .slice(0, 500);
  if (/exceeds pixel limit|exceeds channel limit/i.test(message)) return new PermanentError('image_too_large', message);
  if (/unsupported image format|is blocked|not a known file format/i.test(message))
    return new PermanentError('unsupported_image', message);
  if (/Input file is missing/i.test(message))
    return new PermanentError('file_missing', 'the stored bytes of the file are gone');
  if (/timeout/i.test(message)) return new RetryableError('image_timeout', message);
  // Decoders' words for bytes that end early or do not parse (seen from jpeg, png, webp, avif, gif loaders).
  if (
    /premature end|truncat|corrupt|read error|unable to parse|bad seek|unexpected end|not enough data|crc error|Input (file|buffer) has/i.test(
      message,
    )
  ) {
    return new PermanentError('image_corrupt', message);
  }
  return err instanceof Error ? err : new Error(message);
}
