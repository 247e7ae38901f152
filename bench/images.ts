// Image jobs through the platform beside a plain sharp loop as a user writes it (bench/anchors/bare-sharp.ts: sharp's
// defaults, variants at once), doing the same work. Target: 2-megapixel JPEGs into the three default variants; the
// platform reaches ≥ 90% of that loop's images/s, and the worker process's RSS stays < 600 MiB throughout (sampled every 100 ms, and VmHWM).
// Standalone: `node --import tsx bench/images.ts` (IMAGES=… per round, ROUNDS=…, IMAGE_CONCURRENCY=…).
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { pino } from 'pino';
import sharp from 'sharp';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { saveFile } from '../src/files/index.js';
import { createRegistry } from '../src/jobs/index.js';
import { submit } from '../src/jobs/submit.js';
import { Queues } from '../src/queues/index.js';
import { createRedis, waitForRedis } from '../src/queues/redis.js';
import { DirectoryStorage } from '../src/files/storage.js';
import { cpuSeconds, createStack, procfile, round, sampleRss, sleep, start } from './lib.js';

const IMAGES = Number(process.env.IMAGES ?? 16);
const ROUNDS = Number(process.env.ROUNDS ?? 4);
const CONCURRENCY = Number(process.env.IMAGE_CONCURRENCY ?? 2);
const WIDTH = 1732;
const HEIGHT = 1155; // 2.0 megapixels

/** A photo-like 2 MP JPEG: smooth gradients, some structure, some noise (so encoders have real work). */
async function photo(seed: number): Promise<Buffer> {
  const data = Buffer.alloc(WIDTH * HEIGHT * 3);
  let r = seed * 2654435761;
  for (let y = 0, i = 0; y < HEIGHT; y++) {
    for (let x = 0; x < WIDTH; x++, i += 3) {
      r = (r * 1103515245 + 12345) >>> 0;
      const n = ((r >>> 16) & 31) - 16;
      data[i] = (x * 200) / WIDTH + 30 * Math.sin((x + seed * 37) / 47) + n;
      data[i + 1] = (y * 200) / HEIGHT + 30 * Math.cos((y - seed * 11) / 31) + n;
      data[i + 2] = 128 + 90 * Math.sin(x / 83 + y / 61 + seed) + n;
    }
  }
  return sharp(data, { raw: { width: WIDTH, height: HEIGHT, channels: 3 } })
    .jpeg({ quality: 88 })
    .toBuffer();
}

/** The anchor: a sharp loop as a user writes it (bench/anchors/bare-sharp.ts), in its own process, driven a round at a time. */
function bareSharp(files: string[], outDir: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/anchors/bare-sharp.ts'], {
    cwd: process.cwd(),
    env: {
      ...process.env,
      INPUTS: JSON.stringify(files),
      OUT_DIR: outDir,
      CONCURRENCY: String(CONCURRENCY),
      ROUNDS: String(ROUNDS),
    },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error('the bare sharp loop exited early');
    return JSON.parse(value) as { ready?: true; seconds: number; cpu_ms: number };
  };
  return {
    ready: next,
    async round() {
      child.stdin!.write('go\n');
      return next();
    },
    stop: () => child.kill(),
  };
}

export async function run(): Promise<Record<string, number | string | boolean>> {
  const stack = await createStack('images', { QUEUES: 'image', WORKER_CONCURRENCY: `image=${CONCURRENCY}` });
  const { config, db } = stack;
  const storage = new DirectoryStorage(config.STORAGE_DIR);
  const scratch = path.join(path.dirname(config.STORAGE_DIR), 'bare');
  const redis = createRedis(config, 'producer');
  redis.on('error', () => {});
  await waitForRedis(redis);
  const queues = new Queues(config, redis);
  const registry = createRegistry();
  const log = pino({ level: 'silent' });
  let worker: Awaited<ReturnType<typeof start>> | undefined;
  try {
    // Inputs: the same JPEG bytes on disk for the bare loop and as uploaded files for the platform.
    const jpegs = await Promise.all(Array.from({ length: IMAGES }, (_, i) => photo(i)));
    const inputs = path.join(scratch, 'in');
    mkdirSync(inputs, { recursive: true });
    const paths = jpegs.map((b, i) => {
      const p = path.join(inputs, `${i}.jpg`);
      writeFileSync(p, b);
      return p;
    });
    const uploads = await Promise.all(
      jpegs.map((body) => saveFile(db, storage, { tenant: stack.tenant, body, contentType: 'image/jpeg' })),
    );

    worker = await start(procfile().worker, stack.env, /worker ready/);
    const rss = sampleRss(worker.pid);
    let bareSeconds = 0;
    let platformSeconds = 0;
    const anchor = bareSharp(paths, scratch);
    await anchor.ready(); // one warm-up round of its own
    const platformRound = async () => {
      const t0 = performance.now();
      const rows = uploads.map((f) => ({
        type: 'image',
        state: 'queued' as const,
        priority: 'normal' as const,
        payload: JSON.stringify({ file_id: f.id }),
        max_attempts: 3,
        callback_url: null,
        run_at: null,
      }));
      const ids = (await submit({ db, queues, registry, log }, stack.tenant, rows)).map((j) => j.id);
      for (;;) {
        const { done } = await db
          .selectFrom('jobs')
          .select(sql<number>`count(*) filter (where state in ('succeeded', 'failed'))`.as('done'))
          .where('id', 'in', ids)
          .executeTakeFirstOrThrow();
        if (Number(done) === ids.length) break;
        await sleep(20);
      }
      return (performance.now() - t0) / 1000;
    };
    // CPU time spent per image on each side (all threads): the worker's from /proc, the anchor's own.
    const ticks = () => cpuSeconds(worker!.pid) * 1000;
    let bareCpuMs = 0;
    let workerCpuMs = 0;
    const bareRound = async () => {
      const r = await anchor.round();
      bareSeconds += r.seconds;
      bareCpuMs += r.cpu_ms;
    };
    const platformTimed = async () => {
      const w0 = ticks();
      platformSeconds += await platformRound();
      workerCpuMs += ticks() - w0;
    };
    // Short alternating rounds, the order flipped each time, so a load change on a shared machine hits both sides.
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2 === 0) {
        await bareRound();
        await platformTimed();
      } else {
        await platformTimed();
        await bareRound();
      }
    }
    anchor.stop();
    const { first, peak } = rss.stop();
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${worker.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
    const outcome = await db
      .selectFrom('jobs')
      .select(['state', sql<number>`count(*)`.as('n'), sql<number>`max(attempts)`.as('max_attempts')])
      .where('type', '=', 'image')
      .groupBy('state')
      .execute();
    // Where the time goes: a job's own run (started → finished in the ledger) against a bare image's, per lane.
    const { run_ms } = await db
      .selectFrom('jobs')
      .select(sql<number>`avg(extract(epoch from finished_at - started_at) * 1000)`.as('run_ms'))
      .where('type', '=', 'image')
      .executeTakeFirstOrThrow();
    const failed = outcome.filter((o) => o.state !== 'succeeded').reduce((a, o) => a + Number(o.n), 0);
    const maxAttempts = Math.max(...outcome.map((o) => Number(o.max_attempts)));

    const total = IMAGES * ROUNDS;
    const platform = total / platformSeconds;
    const bare = total / bareSeconds;
    const worstRss = Math.max(peak, hwm);
    return {
      images_per_s: round(platform),
      images_per_s_anchor: round(bare),
      images_per_s_unit: 'images/s',
      images_per_s_target: '≥ 90% of a plain sharp loop',
      images_per_s_ok: platform >= 0.9 * bare,
      ratio: round(platform / bare, 3),
      job_run_ms: round(Number(run_ms), 0),
      bare_image_ms: round((bareSeconds * 1000 * CONCURRENCY) / total, 0),
      platform_image_ms: round((platformSeconds * 1000 * CONCURRENCY) / total, 0),
      // On an idle 2-core machine both sides are CPU-bound, so this is what the wall ratio tends to; on a
      // shared one the wall ratio swings with other processes' load (see load_avg_1m).
      cpu_ratio: round(bareCpuMs / workerCpuMs, 3),
      load_avg_1m: round(os.loadavg()[0], 1),
      bare_cpu_ms_per_image: round(bareCpuMs / total, 0),
      worker_cpu_ms_per_image: round(workerCpuMs / total, 0),
      worker_rss_peak_mib: round(worstRss, 1),
      worker_rss_peak_mib_unit: 'MiB',
      worker_rss_peak_mib_target: '< 600',
      worker_rss_peak_mib_ok: worstRss < 600,
      worker_rss_start_mib: round(first, 1),
      jobs_failed: failed,
      // 1: no job ran twice, so no lock lapsed (renewal kept up while libvips held the cores).
      max_attempts: maxAttempts,
      images: total,
      concurrency: CONCURRENCY,
      setup: `${IMAGES} × ${ROUNDS} rounds of ${WIDTH}x${HEIGHT} JPEG → thumb/medium/large webp; worker image=${CONCURRENCY}; anchor: sharp defaults, variants at once, ${CONCURRENCY} images at a time`,
    };
  } finally {
    await worker?.stop();
    await queues.close();
    redis.disconnect();
    await stack.close();
    rmSync(path.dirname(config.STORAGE_DIR), { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const result = await run();
  console.table(Object.entries(result).map(([metric, value]) => ({ metric, value })));
  console.log(JSON.stringify(result));
  process.exit(0);
}
