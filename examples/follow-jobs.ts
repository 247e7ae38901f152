// Submits one job of each type and follows them live in the terminal, one progress bar per job.
//
//   API_KEY=mj_… [API_URL=http://localhost:$PORT] [USER_ID=u00042] [EMAIL_TO=you@example.com] npm run example
//
// `npm run cli -- seed --demo` prints the `export API_KEY=…` (and API_URL, USER_ID) lines to paste first; it also
// makes the catalog and ratings the recommendations job needs. The API is API_URL, else localhost on PORT (3000),
// the same PORT `npm start` was given. A job type the platform does not offer yet is listed as unavailable.
import sharp from 'sharp';
import { ApiError, createClient, type Job, type Submission } from '../src/client/index.js';

const baseUrl = process.env.API_URL ?? `http://localhost:${process.env.PORT ?? 3000}`;
const apiKey = process.env.API_KEY;
if (!apiKey) {
  process.stderr.write('Set API_KEY: run `npm run cli -- seed --demo` and paste the export lines it prints.\n');
  process.exit(2);
}
const jobs = createClient({ baseUrl, apiKey });
const tty = process.stdout.isTTY;

function bar(job: Pick<Job, 'type' | 'state' | 'progress' | 'error'>, note = ''): string {
  const width = 30;
  const filled = Math.round((job.progress / 100) * width);
  const colour = { succeeded: 32, failed: 31, cancelled: 33 }[job.state as string] ?? 36;
  const detail = note || (job.error ? `${job.error.code}: ${job.error.message}`.slice(0, 60) : '');
  const state = tty ? `\x1b[${colour}m${job.state.padEnd(9)}\x1b[0m` : job.state.padEnd(9);
  return `${job.type.padEnd(16)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(job.progress).padStart(3)}% ${state} ${detail}`;
}

/** One line per job; redrawn in place on a terminal, appended otherwise. */
const lines: string[] = [];
function draw(i: number, text: string) {
  if (!tty) return void process.stdout.write(`${text}\n`);
  lines[i] = text;
  const up = lines.length - i;
  process.stdout.write(`\x1b[${up}A\r\x1b[2K${text}\x1b[${up}B\r`);
}

async function sampleImage(): Promise<Uint8Array> {
  // A gradient, so the variants have something to show.
  const w = 1600;
  const h = 1000;
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set([(x * 255) / w, (y * 255) / h, 128], (y * w + x) * 3);
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
}

async function specs(): Promise<Submission[]> {
  const file = await jobs.upload(await sampleImage(), 'image/png');
  return [
    { type: 'recommendations', payload: { user_id: process.env.USER_ID ?? 'u00042', limit: 10 } },
    {
      type: 'email',
      payload: {
        to: process.env.EMAIL_TO ?? 'demo@example.com',
        template: 'plain',
        subject: 'Hello from movie-jobs',
        text: 'This message was sent by examples/follow-jobs.ts.',
      },
    },
    { type: 'image', payload: { file_id: file.id } },
    { type: 'report', payload: { kind: 'jobs', format: 'pdf' } },
  ];
}

const list = await specs();
if (tty) for (const s of list) lines.push(s.type), process.stdout.write(`${s.type}\n`);

const results = await Promise.all(
  list.map(async (spec, i) => {
    let job: Job;
    try {
      job = await jobs.submit(spec);
    } catch (err) {
      const why =
        err instanceof ApiError
          ? err.status === 422
            ? 'not available on this platform yet'
            : err.message
          : String(err);
      draw(i, bar({ type: spec.type, state: 'failed', progress: 0, error: null }, why));
      return undefined;
    }
    draw(i, bar(job));
    const done = await jobs.wait(job.id, { onEvent: (e) => draw(i, bar(e.job)) });
    draw(i, bar(done, done.state === 'succeeded' ? JSON.stringify(done.result).slice(0, 60) : ''));
    return done;
  }),
);

const ok = results.filter((j) => j?.state === 'succeeded').length;
process.stdout.write(`\n${ok} of ${list.length} jobs succeeded.\n`);
process.exit(ok === list.length ? 0 : 1);
