// Hostile input against a real worker process: bombs, lies, SVG references, truncation. Each fails at once
// with a code saying why, and the same worker process goes on to do good work.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureSharp, probe, renderVariant } from '../src/jobs/image/pipeline.js';
import { hostileSvg, makeImage, makePngBomb } from './fixtures/images.js';
import { createTestEnv, startProcess, tenantWithKeys, waitFor, type Proc, type TestEnv } from './helpers.js';

let env: TestEnv;
let worker: Proc;
let t: Awaited<ReturnType<typeof tenantWithKeys>>;
let other: Awaited<ReturnType<typeof tenantWithKeys>>;
let remote: http.Server;
let remoteUrl: string;
const remoteHits: string[] = [];

beforeAll(async () => {
  env = await createTestEnv('image_hostile', { testJobs: false, env: { TENANT_IMAGE_MEGAPIXELS_PER_MINUTE: '0' } });
  [t, other] = await Promise.all([tenantWithKeys(env), tenantWithKeys(env)]);
  remote = http.createServer((req, res) => {
    remoteHits.push(req.url ?? '');
    res.end();
  });
  await new Promise<void>((r) => remote.listen(0, '127.0.0.1', r));
  remoteUrl = `http://127.0.0.1:${(remote.address() as AddressInfo).port}`;
  worker = await startProcess('worker', env.env, { QUEUES: 'image' }, { startTimeoutMs: 100_000 });
});

afterAll(async () => {
  await worker?.stop();
  remote?.close();
  await env?.close();
});

async function call(key: string, method: string, path: string, body?: unknown) {
  const isBytes = body instanceof Uint8Array || body instanceof FormData;
  const res = await env.app.request(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body && !isBytes ? { 'content-type': 'application/json' } : {}) },
    body: isBytes ? (body as RequestInit['body']) : body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as any };
}

const upload = async (bytes: Buffer, key = t.clientKey) =>
  (await call(key, 'POST', '/v1/files', new Uint8Array(bytes))).body.id as string;

async function runImage(payload: Record<string, unknown>) {
  const r = await call(t.clientKey, 'POST', '/v1/jobs', { type: 'image', payload });
  expect(r.status).toBe(202);
  return waitFor(
    async () => {
      const j = (await call(t.clientKey, 'GET', `/v1/jobs/${r.body.id}`)).body;
      return ['succeeded', 'failed'].includes(j.state) ? j : undefined;
    },
    { timeout: 30_000, what: `image job ${r.body.id}` },
  );
}

/** Fails at once (one attempt, no retry) with this code. */
async function expectRefused(payload: Record<string, unknown>, code: string) {
  const job = await runImage(payload);
  expect(job.state).toBe('failed');
  expect(job.error.code).toBe(code);
  expect(job.attempts).toBe(1);
  return job;
}

/** Peak resident memory of the worker process so far (Linux VmHWM), in MiB. */
function workerPeakMiB(): number {
  const status = readFileSync(`/proc/${worker.child.pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

describe('hostile input to image jobs', () => {
  it('refuses a 20000x20000 PNG bomb before decoding it: image_too_large, no memory spike', async () => {
    const bomb = makePngBomb(20_000, 20_000);
    expect(bomb.length).toBeLessThan(200_000);
    expect(await sharp(bomb, { limitInputPixels: false }).metadata()).toMatchObject({
      format: 'png',
      width: 20_000,
      height: 20_000,
    });
    const job = await expectRefused({ file_id: await upload(bomb) }, 'image_too_large');
    expect(job.error.message).toMatch(/20000x20000/);
    // Decoding it would take 400 MB as greyscale, 1.2 GB as RGB.
    expect(workerPeakMiB()).toBeLessThan(350);
  });

  it('refuses a text file named .jpg and sent as image/jpeg: unsupported_image', async () => {
    const form = new FormData();
    form.append('file', new Blob(['This is not a JPEG at all.\n'.repeat(50)], { type: 'image/jpeg' }), 'holiday.jpg');
    const up = await call(t.clientKey, 'POST', '/v1/files', form);
    expect(up.status).toBe(201);
    expect(up.body.content_type).toBe('application/octet-stream');
    await expectRefused({ file_id: up.body.id }, 'unsupported_image');
  });

  it('never reads the files or URLs an SVG refers to: SVG input is refused', async () => {
    const job = await expectRefused({ file_id: await upload(hostileSvg(remoteUrl)) }, 'unsupported_image');
    expect(job.error.message).not.toMatch(/root:/);
    await new Promise((r) => setTimeout(r, 200));
    expect(remoteHits).toEqual([]);
  });

  it('blocks the SVG loader (and other untrusted libvips loaders) in the process, not only by header', async () => {
    configureSharp();
    const svg = hostileSvg(remoteUrl);
    await expect(sharp(svg).png().toBuffer()).rejects.toThrow(/unsupported image format/);
    await expect(probe(svg, 1e6)).rejects.toMatchObject({ code: 'unsupported_image' });
    // A PDF and a FITS-looking header are refused the same way.
    await expect(sharp(Buffer.from('%PDF-1.4\n%%EOF\n')).metadata()).rejects.toThrow(/unsupported image format/);
    await expect(sharp(Buffer.from(`SIMPLE  =                    T${' '.repeat(50)}`)).metadata()).rejects.toThrow(
      /unsupported image format/,
    );
    expect(remoteHits).toEqual([]);
  });

  it('refuses truncated and garbage bytes: image_corrupt, unsupported_image', async () => {
    const jpeg = await makeImage('jpeg', 800, 600);
    await expectRefused({ file_id: await upload(jpeg.subarray(0, Math.floor(jpeg.length / 2))) }, 'image_corrupt');
    const png = await makeImage('png', 300, 200);
    await expectRefused({ file_id: await upload(png.subarray(0, 40)) }, 'image_corrupt');
    const webp = await makeImage('webp', 300, 200);
    await expectRefused({ file_id: await upload(webp.subarray(0, Math.floor(webp.length * 0.6))) }, 'image_corrupt');
    await expectRefused(
      { file_id: await upload(Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7919) % 251))) },
      'unsupported_image',
    );
  });

  it('names every format cut short as image_corrupt (or unsupported_image when no header is left)', async () => {
    configureSharp();
    for (const format of ['jpeg', 'png', 'webp', 'avif', 'gif', 'tiff'] as const) {
      const bytes = await makeImage(format, 300, 200);
      for (const keep of [0.1, 0.6]) {
        const cut = bytes.subarray(0, Math.floor(bytes.length * keep));
        const err = await probe(cut, 1e7)
          .then(() => renderVariant(cut, { name: 'x', width: 100 }, 1e7))
          .then(
            () => undefined,
            (e: { code?: string }) => e,
          );
        expect(err, `${format} cut at ${keep}`).toBeDefined();
        expect(['image_corrupt', 'unsupported_image'], `${format} cut at ${keep}`).toContain(err!.code);
        if (format !== 'tiff') expect(err!.code, `${format} cut at ${keep}`).toBe('image_corrupt');
      }
    }
  });

  it("refuses at submission (422) an image job for another tenant's file or an unknown one", async () => {
    const theirs = await upload(await makeImage('png', 50, 50), other.clientKey);
    for (const file_id of [theirs, 'file_nosuchfile0000', 'not-a-file-id']) {
      const r = await call(t.clientKey, 'POST', '/v1/jobs', { type: 'image', payload: { file_id } });
      expect(r.status, file_id).toBe(422);
      expect(r.body.errors).toEqual([{ path: 'payload.file_id', message: expect.stringContaining('upload it first') }]);
    }
    // A batch: one lookup, each missing file named by its place.
    const mine = await upload(await makeImage('png', 50, 50));
    const bulk = await call(t.clientKey, 'POST', '/v1/jobs/bulk', {
      jobs: [
        { type: 'image', payload: { file_id: mine } },
        { type: 'image', payload: { file_id: theirs } },
        { type: 'image', payload: { file_id: mine } },
        { type: 'image', payload: { file_id: 'file_nosuchfile0001' } },
      ],
    });
    expect(bulk.status).toBe(422);
    expect(bulk.body.errors.map((e: { path: string }) => e.path)).toEqual([
      'jobs.1.payload.file_id',
      'jobs.3.payload.file_id',
    ]);
  });

  it('fails with file_not_found when the file is gone by the time the job runs', async () => {
    const id = await upload(await makeImage('png', 50, 50));
    const r = await call(t.clientKey, 'POST', '/v1/jobs', {
      type: 'image',
      payload: { file_id: id },
      run_at: new Date(Date.now() + 1500).toISOString(),
    });
    expect(r.status).toBe(202);
    await env.db.deleteFrom('files').where('id', '=', id).execute();
    const job = await waitFor(
      async () => {
        const j = (await call(t.clientKey, 'GET', `/v1/jobs/${r.body.id}`)).body;
        return ['succeeded', 'failed'].includes(j.state) ? j : undefined;
      },
      { timeout: 30_000, what: 'the delayed image job' },
    );
    expect(job).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'file_not_found' } });
  });

  it('the same worker process is alive afterwards and does good work', async () => {
    const pid = worker.child.pid;
    const job = await runImage({ file_id: await upload(await makeImage('jpeg', 640, 480)) });
    expect(job.state).toBe('succeeded');
    expect(job.result.variants).toHaveLength(3);
    expect(worker.child.exitCode).toBeNull();
    expect(worker.child.pid).toBe(pid);
    expect(worker.output()).not.toMatch(/uncaught|unhandled|FATAL|Segmentation|sweep failed/i);
  });
});
