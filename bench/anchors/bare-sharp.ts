// Anchor for the image scenario: a sharp loop as a user writes it, in a process of its own so none of the
// platform's libvips settings apply. sharp's defaults (libvips threads = cores, its cache), the variants of an
// image made at once (Promise.all), CONCURRENCY images at a time — the same work as the platform's job: the three
// default variants (fit inside, no upscaling, webp), auto-rotated, written to disk.
// Input: INPUTS (JSON array of file paths), OUT_DIR, ROUNDS. Prints one JSON line per round: {seconds, cpu_ms}.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import sharp from 'sharp';

const files = JSON.parse(process.env.INPUTS ?? '[]') as string[];
const outDir = process.env.OUT_DIR ?? 'var/bench/bare-sharp';
const concurrency = Number(process.env.CONCURRENCY ?? 2);
const rounds = Number(process.env.ROUNDS ?? 1);
const variants = [
  { name: 'thumb', size: 128 },
  { name: 'medium', size: 512 },
  { name: 'large', size: 1280 },
];

async function once(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < files.length; i = next++) {
        await Promise.all(
          variants.map(async (v) => {
            const out = await sharp(files[i], { autoOrient: true })
              .resize(v.size, v.size, { fit: 'inside', withoutEnlargement: true })
              .webp()
              .toBuffer();
            writeFileSync(path.join(dir, `${i}-${v.name}.webp`), out);
          }),
        );
      }
    }),
  );
}

// Driven by the benchmark one round at a time (a line on stdin starts a round), so rounds alternate with the
// platform's in one sitting.
await once(path.join(outDir, 'warm'));
console.log(JSON.stringify({ ready: true }));
let r = 0;
for await (const _line of createInterface({ input: process.stdin })) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await once(path.join(outDir, `round-${r++}`));
  const c = process.cpuUsage(c0);
  console.log(JSON.stringify({ seconds: (performance.now() - t0) / 1000, cpu_ms: (c.user + c.system) / 1000 }));
  if (r >= rounds) break;
}
process.exit(0);
