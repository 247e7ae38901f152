// Anchor for the worker-overhead scenario: a bare BullMQ Worker with the same concurrency, trivial processor.
// Adds N jobs, then times how long the worker takes to finish them all. Prints one JSON line.
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const n = Number(process.env.JOBS ?? 5000);
const concurrency = Number(process.env.CONCURRENCY ?? 32);
const prefix = process.env.QUEUE_PREFIX ?? 'bench-anchor';
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const queue = new Queue('bare', { connection: new Redis(url), prefix });
for (let i = 0; i < n; i += 1000) {
  await queue.addBulk(
    Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({
      name: 'bare',
      data: { n: i + k },
      opts: { removeOnComplete: { count: 1000 } },
    })),
  );
}
let done = 0;
const start = performance.now();
const cpu0 = process.cpuUsage();
const finished = new Promise<void>((resolve) => {
  const worker = new Worker('bare', async () => ({ ok: true }), {
    connection: new Redis(url, { maxRetriesPerRequest: null }),
    prefix,
    concurrency,
  });
  worker.on('completed', () => {
    if (++done === n) {
      resolve();
      void worker.close();
    }
  });
});
await finished;
const seconds = (performance.now() - start) / 1000;
const { user, system } = process.cpuUsage(cpu0);
console.log(JSON.stringify({ jobs: n, seconds, jobs_per_s: n / seconds, cpu_ms_per_job: (user + system) / 1000 / n }));
await queue.obliterate({ force: true });
await queue.close();
process.exit(0);
