// Issue 17, item 6: webhooks lost after a PostgreSQL outage. A throwaway PostgreSQL cluster (the shared server is
// never touched) is stopped under in-process workers while a delivery is due; the sweep is run against failed BullMQ
// records and against jobs that ended days ago.
import { Worker, UnrecoverableError } from 'bullmq';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobRow } from '../src/db/types.js';
import { bullPrefix } from '../src/queues/keys.js';
import { createRedis } from '../src/queues/redis.js';
import { listDeliveries } from '../src/db/webhooks.js';
import { enqueueWebhook, messageId, WEBHOOK_QUEUE } from '../src/webhooks/delivery.js';
import { sweepOnce } from '../src/webhooks/sweep.js';
import type { RunningWorkers } from '../src/workers/runtime.js';
import { createTestEnv, tenantWithKeys, uniqueName, waitFor, type TestEnv } from './helpers.js';
import { privatePostgres, type PrivatePostgres } from './support/private-postgres.js';
import { startReceiver, type Receiver } from './support/receiver.js';

let pg: PrivatePostgres;
let env: TestEnv;
let rx: Receiver;
let tenant: string;
let running: RunningWorkers | undefined;

beforeAll(async () => {
  pg = await privatePostgres();
  env = await createTestEnv('webhook_outage', {
    env: {
      DATABASE_URL: `${pg.url}/${uniqueName('webhook_outage')}`,
      WEBHOOK_ALLOW_PRIVATE: 'true',
      // Three quick tries: an outage far shorter than the test's spends them all unless the worker pauses.
      WEBHOOK_ATTEMPTS: '3',
      WEBHOOK_BACKOFF_MS: '20',
      WEBHOOK_TIMEOUT_MS: '2000',
    },
  });
  tenant = (await tenantWithKeys(env)).tenant;
  rx = await startReceiver();
});

afterAll(async () => {
  await running?.close(1_000);
  await rx?.close();
  await env?.close();
  await pg?.destroy();
});

/** An ended job with a callback, written straight to the ledger (as a worker's terminal write leaves it). */
async function endedJob(path: string, endedAgoMs: number): Promise<JobRow> {
  const finished = new Date(Date.now() - endedAgoMs);
  return env.db
    .insertInto('jobs')
    .values({
      id: uuidv7(),
      tenant,
      type: 'test',
      state: 'succeeded',
      priority: 'normal',
      payload: '{}',
      max_attempts: 1,
      result: '{"ok":true}',
      callback_url: `${rx.url}${path}`,
      created_at: finished,
      started_at: finished,
      finished_at: finished,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

const delivered = (path: string) => rx.received.filter((r) => r.path === path && r.status === 200);

describe('webhooks lost after a PostgreSQL outage (item 6)', () => {
  it('a delivery due while PostgreSQL is down waits for it (the webhook worker is behind the DbGuard) and is delivered once', {
    timeout: 120_000,
  }, async () => {
    running = await env.startWorkers(['test']);
    const webhooks = running.workers.find((w) => w.name === WEBHOOK_QUEUE)!;
    const row = await endedJob('/outage', 0);
    await pg.stop();
    try {
      await enqueueWebhook(env.queues, env.config, row);
      const queue = env.queues.get(WEBHOOK_QUEUE);
      // Either the tries are spent on the unreachable ledger (the message is failed), or the worker paused.
      await waitFor(async () => webhooks.isPaused() || (await queue.getJobState(messageId(row))) === 'failed', {
        timeout: 30_000,
        what: 'the webhook worker to pause or the message to fail',
      });
      expect(await queue.getJobState(messageId(row))).not.toBe('failed');
    } finally {
      await pg.start();
    }
    await waitFor(() => delivered('/outage').length > 0, { timeout: 60_000, what: 'the delivery after the outage' });
    await waitFor(async () => (await listDeliveries(env.db, row.id)).length > 0, { what: 'the delivery row' });
    expect(delivered('/outage')).toHaveLength(1);
    expect((await listDeliveries(env.db, row.id)).map((d) => d.outcome)).toEqual(['delivered']);
  });

  it('the sweep enqueues again a message whose BullMQ job failed without its receiver ever answering', async () => {
    const row = await endedJob('/failed-in-bullmq', 5 * 60_000);
    // A BullMQ record of this message that failed for a reason other than the receiver (as when every try was
    // spent on an unreachable ledger): re-adding under the same id would be a no-op while it exists.
    await running?.close(1_000);
    running = undefined;
    await enqueueWebhook(env.queues, env.config, row);
    const failing = new Worker(
      WEBHOOK_QUEUE,
      async () => {
        throw new UnrecoverableError('ledger unreachable');
      },
      { connection: createRedis(env.config, 'worker'), prefix: bullPrefix(env.config, WEBHOOK_QUEUE) },
    );
    const queue = env.queues.get(WEBHOOK_QUEUE);
    await waitFor(async () => (await queue.getJobState(messageId(row))) === 'failed', { what: 'the failed record' });
    await failing.close();

    running = await env.startWorkers(['test']);
    expect(await sweepOnce(env)).toContain(row.id);
    await waitFor(() => delivered('/failed-in-bullmq').length > 0, { what: 'the swept delivery' });
    await waitFor(async () => !(await sweepOnce(env)).length && (await listDeliveries(env.db, row.id)).length > 0);
    expect(delivered('/failed-in-bullmq')).toHaveLength(1);
  });

  it('the sweep keeps looking past 24 h: a job that ended three days ago without a delivery gets one', async () => {
    const row = await endedJob('/three-days', 3 * 24 * 3600_000);
    expect(await sweepOnce(env)).toContain(row.id);
    await waitFor(() => delivered('/three-days').length > 0, { what: 'the swept delivery' });
    // Delivered: settled (a write of its own, just after the delivery's row), so later sweeps leave it alone.
    const settled = await waitFor(
      async () => {
        const r = await env.db
          .selectFrom('jobs')
          .select(['webhook_done_for', 'finished_at'])
          .where('id', '=', row.id)
          .executeTakeFirstOrThrow();
        return r.webhook_done_for ? r : undefined;
      },
      { what: 'the message to be settled' },
    );
    expect(settled.webhook_done_for?.getTime()).toBe(settled.finished_at?.getTime());
    expect((await listDeliveries(env.db, row.id)).map((d) => d.outcome)).toEqual(['delivered']);
    expect(await sweepOnce(env)).not.toContain(row.id);
    expect(delivered('/three-days')).toHaveLength(1);
  });

  it('the sweep leaves a message alone once its tries are spent at the receiver', async () => {
    rx.on('/gone', 500);
    const row = await endedJob('/gone', 60_000);
    await enqueueWebhook(env.queues, env.config, row);
    await waitFor(async () => (await listDeliveries(env.db, row.id)).length === 3, { what: 'three tries' });
    await waitFor(async () => (await env.queues.get(WEBHOOK_QUEUE).getJobState(messageId(row))) === 'failed');
    expect(await sweepOnce(env)).not.toContain(row.id);
    expect(rx.received.filter((r) => r.path === '/gone')).toHaveLength(3);
  });
});
