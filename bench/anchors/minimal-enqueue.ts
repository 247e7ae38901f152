// Anchor for the enqueue scenario: a minimal Hono app that only does queue.add on the same Redis.
import { serve } from '@hono/node-server';
import { Queue } from 'bullmq';
import { Hono } from 'hono';
import { Redis } from 'ioredis';

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
const queue = new Queue('anchor', { connection: redis, prefix: process.env.QUEUE_PREFIX ?? 'bench-anchor' });
const app = new Hono();
app.post('/jobs', async (c) => {
  const body = await c.req.json();
  const job = await queue.add('anchor', body);
  return c.json({ id: job.id }, 202);
});
serve({ fetch: app.fetch, port: Number(process.env.PORT) }, () => console.log('anchor ready'));
process.on('SIGTERM', () => process.exit(0));
