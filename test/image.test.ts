// Image jobs on real images: every input format, custom variants, EXIF rotation, progress, reruns.
import { QueueEvents } from 'bullmq';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobFileId } from '../src/files/index.js';
import { enqueue } from '../src/jobs/enqueue.js';
import { createRedis } from '../src/queues/redis.js';
import { makeExifRotatedJpeg, makeImage, type InputFormat } from './fixtures/images.js';
import { createTestEnv, tenantWithKeys, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let t: Awaited<ReturnType<typeof tenantWithKeys>>;
let events: QueueEvents;
const progress = new Map<string, number[]>();

beforeAll(async () => {
  env = await createTestEnv('image', { testJobs: false, env: { TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '0' } });
  t = await tenantWithKeys(env);
  events = new QueueEvents('image', {
    connection: createRedis(env.config, 'worker'),
    prefix: env.queues.get('image').opts.prefix,
  });
  events.on('progress', ({ jobId, data }) => progress.set(jobId, [...(progress.get(jobId) ?? []), Number(data)]));
  await events.waitUntilReady();
  await env.startWorkers(['image']);
});

afterAll(async () => {
  await events?.close();
  await env?.close();
});

async function call(method: string, path: string, body?: unknown, raw?: Buffer) {
  const res = await env.app.request(path, {
    method,
    headers: { authorization: `Bearer ${t.clientKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: raw ? new Uint8Array(raw) : body ? JSON.stringify(body) : undefined,
  });
  const type = res.headers.get('content-type') ?? '';
  return {
    status: res.status,
    type,
    body: /json/.test(type) ? ((await res.json()) as any) : Buffer.from(await res.arrayBuffer()),
  };
}

const upload = async (bytes: Buffer) => (await call('POST', '/v1/files', undefined, bytes)).body.id as string;

async function runImage(payload: Record<string, unknown>) {
  const r = await call('POST', '/v1/jobs', { type: 'image', payload });
  expect(r.status).toBe(202);
  return waitFor(
    async () => {
      const j = (await call('GET', `/v1/jobs/${r.body.id}`)).body;
      return ['succeeded', 'failed'].includes(j.state) ? j : undefined;
    },
    { timeout: 30_000, what: `image job ${r.body.id}` },
  );
}

/** Downloads a variant and checks it is what the result says. */
async function checkVariant(v: { file_id: string; width: number; height: number; format: string; bytes: number }) {
  const got = await call('GET', `/v1/files/${v.file_id}`);
  expect(got.status).toBe(200);
  expect(got.type).toBe(`image/${v.format}`);
  expect(got.body.length).toBe(v.bytes);
  const meta = await sharp(got.body).metadata();
  expect({ width: meta.width, height: meta.height, format: meta.format === 'heif' ? 'avif' : meta.format }).toEqual({
    width: v.width,
    height: v.height,
    format: v.format,
  });
  // Metadata stripped: no EXIF, no orientation, no ICC profile.
  expect(meta.exif).toBeUndefined();
  expect(meta.orientation).toBeUndefined();
  expect(meta.icc).toBeUndefined();
  return got.body as Buffer;
}

const fitBox = (w: number, h: number, box: number) => {
  const s = Math.min(1, box / Math.max(w, h));
  return [Math.round(w * s), Math.round(h * s)];
};

describe('image jobs', () => {
  const inputs: [InputFormat, number, number][] = [
    ['jpeg', 1600, 1200],
    ['png', 900, 600],
    ['webp', 700, 1000],
    ['avif', 320, 240],
    ['gif', 200, 150],
    ['tiff', 640, 480],
  ];
  it.each(inputs)(
    'turns a %s into the default variants (thumb 128, medium 512, large 1280, webp)',
    async (format, w, h) => {
      const id = await upload(await makeImage(format, w, h));
      const job = await runImage({ file_id: id });
      expect(job.error).toBeNull();
      expect(job).toMatchObject({ state: 'succeeded', progress: 100, attempts: 1 });
      expect(job.result.variants.map((v: { name: string }) => v.name)).toEqual(['thumb', 'medium', 'large']);
      for (const [v, box] of job.result.variants.map((v: any, i: number) => [v, [128, 512, 1280][i]])) {
        const [ew, eh] = fitBox(w, h, box);
        expect(v).toMatchObject({ format: 'webp', width: ew, height: eh, file_id: jobFileId(job.id, v.name) });
        await checkVariant(v);
      }
    },
  );

  it('honours custom variants: cover, contain and inside; jpeg, png, webp and avif; quality', async () => {
    const id = await upload(await makeImage('jpeg', 1200, 800));
    const job = await runImage({
      file_id: id,
      variants: [
        { name: 'square', width: 100, height: 100, fit: 'cover', format: 'jpeg', quality: 60 },
        { name: 'boxed', width: 200, height: 50, fit: 'contain', format: 'png' },
        { name: 'wide', width: 300, format: 'avif', quality: 40 },
        { name: 'hq', width: 600, height: 600, format: 'webp', quality: 95 },
        { name: 'lq', width: 600, height: 600, format: 'webp', quality: 10 },
        { name: 'original', format: 'jpeg' },
      ],
    });
    expect(job.error).toBeNull();
    const by = Object.fromEntries(job.result.variants.map((v: any) => [v.name, v]));
    expect(by.square).toMatchObject({ width: 100, height: 100, format: 'jpeg' });
    expect(by.boxed).toMatchObject({ width: 200, height: 50, format: 'png' });
    expect(by.wide).toMatchObject({ width: 300, height: 200, format: 'avif' });
    expect(by.hq).toMatchObject({ width: 600, height: 400 });
    expect(by.original).toMatchObject({ width: 1200, height: 800 });
    expect(by.lq.bytes).toBeLessThan(by.hq.bytes);
    for (const v of job.result.variants) await checkVariant(v);
    // contain letterboxes with transparency in PNG.
    const boxed = await sharp(await checkVariant(by.boxed))
      .ensureAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect(boxed.data[3]).toBe(0);
  });

  it('auto-rotates from EXIF: the output is upright, without the orientation tag', async () => {
    const id = await upload(await makeExifRotatedJpeg());
    const job = await runImage({ file_id: id, variants: [{ name: 'upright', width: 1000, format: 'png' }] });
    const v = job.result.variants[0];
    expect(v).toMatchObject({ width: 200, height: 300 });
    const png = await checkVariant(v);
    const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const px = (x: number, y: number) => [...data.subarray((y * info.width + x) * 3, (y * info.width + x) * 3 + 3)];
    const [top, bottom] = [px(100, 30), px(100, 270)];
    expect(top[0]).toBeGreaterThan(200); // red on top
    expect(top[2]).toBeLessThan(60);
    expect(bottom[2]).toBeGreaterThan(200); // blue below
    expect(bottom[0]).toBeLessThan(60);
  });

  it('reports progress per variant', async () => {
    const id = await upload(await makeImage('jpeg', 400, 300));
    const variants = ['a', 'b', 'c', 'd'].map((name) => ({ name, width: 100 }));
    const job = await runImage({ file_id: id, variants });
    expect(job.state).toBe('succeeded');
    await waitFor(() => (progress.get(job.id)?.length ?? 0) >= 3, { what: 'progress events' });
    expect(progress.get(job.id)).toEqual([25, 50, 75]);
  });

  it('a rerun overwrites its outputs under the same ids instead of adding files', async () => {
    const id = await upload(await makeImage('png', 300, 300));
    const job = await runImage({ file_id: id, variants: [{ name: 'one', width: 50 }] });
    const before = await env.db.selectFrom('files').selectAll().where('job_id', '=', job.id).execute();
    // Make the job runnable again the way a retry would, and run it.
    await (await env.queues.get('image').getJob(job.id))?.remove();
    const row = await env.db
      .updateTable('jobs')
      .set({ state: 'queued' })
      .where('id', '=', job.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    await enqueue(env.queues, env.registry, [row]);
    await waitFor(
      async () =>
        (await env.db.selectFrom('jobs').select('attempts').where('id', '=', job.id).executeTakeFirstOrThrow())
          .attempts === 2 || undefined,
      {
        what: 'the rerun',
      },
    );
    await waitFor(async () => (await call('GET', `/v1/jobs/${job.id}`)).body.state === 'succeeded');
    const after = await env.db.selectFrom('files').selectAll().where('job_id', '=', job.id).execute();
    expect(after.map((f) => f.id)).toEqual(before.map((f) => f.id));
    expect(after[0].sha256).toBe(before[0].sha256);
  });

  it('keeps the source at least as long as its outputs', async () => {
    const id = await upload(await makeImage('png', 100, 100));
    await env.db
      .updateTable('files')
      .set({ expires_at: new Date(Date.now() + 60_000) })
      .where('id', '=', id)
      .execute();
    const job = await runImage({ file_id: id, variants: [{ name: 'x', width: 10 }] });
    const src = await env.db.selectFrom('files').select('expires_at').where('id', '=', id).executeTakeFirstOrThrow();
    const out = await env.db
      .selectFrom('files')
      .select('expires_at')
      .where('id', '=', job.result.variants[0].file_id)
      .executeTakeFirstOrThrow();
    expect(src.expires_at!.getTime()).toBeGreaterThanOrEqual(out.expires_at!.getTime() - 5_000);
    expect(out.expires_at!.getTime()).toBeGreaterThan(Date.now() + 29 * 86_400_000);
  });

  it('refuses bad payloads at submission: duplicate names, long names, too many variants, unknown fields', async () => {
    const bad = [
      { file_id: 'file_x', variants: [{ name: 'a' }, { name: 'a' }] },
      { file_id: 'file_x', variants: [{ name: 'a'.repeat(21) }] },
      { file_id: 'file_x', variants: Array.from({ length: 9 }, (_, i) => ({ name: `v${i}` })) },
      { file_id: 'file_x', variants: [{ name: 'a', format: 'bmp' }] },
      { file_id: 'file_x', colour: 'red' },
    ];
    for (const payload of bad) expect((await call('POST', '/v1/jobs', { type: 'image', payload })).status).toBe(400);
  });
});
