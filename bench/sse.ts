// Live streams: memory per open SSE stream on one API process, and how long opening them takes.
// The API runs in a child started with --expose-gc (this file in `serve` mode), so memory is read after a full GC:
// heap and external bytes per stream, besides RSS (which also counts garbage not yet collected).
// Standalone: `node --import tsx bench/sse.ts` (STREAMS=… to change the count). Figures taken while other work
// shares the machine are indicative.
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { createStack, round, sleep, start, type Proc } from './lib.js';

const N = Number(process.env.STREAMS ?? 1000);
const WARMUP = 50;

interface Mem {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  streams: number;
}

/** Serve mode: the real app with its event hub; SIGUSR2 → full GC, then one `mem {json}` line on stdout. */
async function serveMode() {
  await import('@hono/zod-openapi'); // before any schema is built, as in src/api/server.ts
  const { serve } = await import('@hono/node-server');
  const { loadConfig } = await import('../src/config.js');
  const { createDb } = await import('../src/db/index.js');
  const { createRegistry } = await import('../src/jobs/index.js');
  const { createRedis } = await import('../src/queues/redis.js');
  const { Queues } = await import('../src/queues/index.js');
  const { DirectoryStorage } = await import('../src/files/storage.js');
  const { createApp } = await import('../src/api/app.js');
  const { EventHub } = await import('../src/api/event-hub.js');
  const { pino } = await import('pino');
  const config = loadConfig();
  const redis = createRedis(config, 'producer');
  const hub = EventHub.create(config);
  const deps = {
    config,
    db: createDb(config.DATABASE_URL, 5),
    redis,
    queues: new Queues(config, redis),
    registry: createRegistry(),
    storage: new DirectoryStorage(config.STORAGE_DIR),
    log: pino({ level: 'silent' }),
    hub,
  };
  serve({ fetch: createApp(deps).fetch, port: config.PORT, hostname: '127.0.0.1' }, () => console.log('API listening'));
  process.on('SIGUSR2', () => {
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    console.log(
      `mem ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, streams: hub.size })}`,
    );
  });
}

async function memory(api: Proc): Promise<Mem> {
  const before = api.output().length;
  process.kill(api.pid, 'SIGUSR2');
  for (;;) {
    const m = /mem (\{.*\})\n/.exec(api.output().slice(before));
    if (m) return JSON.parse(m[1]) as Mem;
    await sleep(20);
  }
}

function open(base: string, key: string, id: string): Promise<http.ClientRequest> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${base}/v1/jobs/${id}/events`,
      { headers: { authorization: `Bearer ${key}` }, agent: false },
      (res) => {
        if (res.statusCode !== 200) return reject(new Error(`events answered ${res.statusCode}`));
        res.once('data', () => resolve(req));
      },
    );
    req.on('error', reject);
  });
}

async function openAll(base: string, key: string, ids: string[]): Promise<http.ClientRequest[]> {
  const out: http.ClientRequest[] = [];
  for (let i = 0; i < ids.length; i += 100)
    out.push(...(await Promise.all(ids.slice(i, i + 100).map((id) => open(base, key, id)))));
  return out;
}

export async function run(): Promise<Record<string, number | string>> {
  const stack = await createStack('sse');
  const procs: Proc[] = [];
  try {
    const api = await start('node --expose-gc --import tsx bench/sse.ts serve', stack.env, /API listening/, {
      port: true,
    });
    procs.push(api);
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const ids: string[] = [];
    for (let made = 0; made < N; made += 1000) {
      const res = await fetch(`${api.url}/v1/jobs/bulk`, {
        method: 'POST',
        headers: { authorization: `Bearer ${stack.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          jobs: Array.from({ length: Math.min(1000, N - made) }, () => ({
            type: 'report',
            payload: { kind: 'jobs' },
            run_at: later,
          })),
        }),
      });
      if (res.status !== 202) throw new Error(`bulk submit answered ${res.status}: ${await res.text()}`);
      ids.push(...((await res.json()) as { jobs: { id: string }[] }).jobs.map((j) => j.id));
    }
    (await openAll(api.url!, stack.key, ids.slice(0, WARMUP))).forEach((r) => r.destroy());
    await sleep(500);
    const base = await memory(api);
    const t0 = performance.now();
    const streams = await openAll(api.url!, stack.key, ids);
    const openMs = performance.now() - t0;
    await sleep(500);
    const full = await memory(api);
    streams.forEach((r) => r.destroy());
    await sleep(1000);
    const after = await memory(api);
    const per = (k: keyof Mem) => Math.round((full[k] - base[k]) / N);
    return {
      streams: N,
      open_streams_seen_by_hub: full.streams,
      heap_bytes_per_stream: per('heapUsed'),
      external_bytes_per_stream: per('external'),
      rss_bytes_per_stream: per('rss'),
      rss_mib_base: round(base.rss / 2 ** 20, 1),
      rss_mib_open: round(full.rss / 2 ** 20, 1),
      heap_mib_after_close: round(after.heapUsed / 2 ** 20, 1),
      heap_mib_base: round(base.heapUsed / 2 ** 20, 1),
      streams_after_close: after.streams,
      open_ms_per_100: round((openMs / N) * 100, 1),
    };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await stack.close();
  }
}

if (process.argv[2] === 'serve') {
  await serveMode();
} else if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const figures = await run();
  console.table(figures);
  console.log(JSON.stringify(figures));
  process.exit(0);
}
