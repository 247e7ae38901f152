// Anchor for the email scenario: what a user of BullMQ and nodemailer writes — a Queue, a Worker whose processor
// sends one message through a pooled nodemailer transport with nodemailer's defaults (5 connections, 100 messages
// each), the same worker concurrency as the platform's email type, into the same SMTP sink. Times the first add to
// the last completion. Prints one JSON line.
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import nodemailer from 'nodemailer';

const n = Number(process.env.EMAILS ?? 2000);
const concurrency = Number(process.env.CONCURRENCY ?? 20);
const prefix = process.env.QUEUE_PREFIX ?? 'bench-mail-anchor';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const smtp = new URL(process.env.SMTP_URL ?? 'smtp://127.0.0.1:2525');
const message = JSON.parse(process.env.MESSAGE ?? '{"subject":"Benchmark","text":"A short plain message."}') as {
  subject: string;
  text: string;
  html?: string;
};

const transport = nodemailer.createTransport({ pool: true, host: smtp.hostname, port: Number(smtp.port) });
const queue = new Queue('mail', { connection: new Redis(redisUrl), prefix });
let done = 0;
const start = performance.now();
const finished = new Promise<void>((resolve, reject) => {
  const worker = new Worker(
    'mail',
    async (job) => transport.sendMail({ from: 'Bench <bench@movies.test>', to: job.data.to, ...message }),
    { connection: new Redis(redisUrl, { maxRetriesPerRequest: null }), prefix, concurrency },
  );
  worker.on('failed', (_job, err) => reject(err));
  worker.on('completed', () => {
    if (++done === n) {
      resolve();
      void worker.close();
    }
  });
});
for (let i = 0; i < n; i += 1000) {
  await queue.addBulk(
    Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({
      name: 'send',
      data: { to: `anchor${i + k}@example.com` },
    })),
  );
}
await finished;
const seconds = (performance.now() - start) / 1000;
await queue.obliterate({ force: true });
await queue.close();
transport.close();
console.log(JSON.stringify({ emails: n, seconds, msg_per_s: n / seconds }));
process.exit(0);
