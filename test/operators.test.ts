// Queue controls and the audit log, against real Redis and PostgreSQL with in-process workers.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { client, createTestEnv, ROOT, sleep, tenantWithKeys, uniqueName, waitFor, type TestEnv } from './helpers.js';

let env: TestEnv;
let keys: Awaited<ReturnType<typeof tenantWithKeys>>;
let op: ReturnType<typeof client>;
let cl: ReturnType<typeof client>;

beforeAll(async () => {
  env = await createTestEnv('operators');
  keys = await tenantWithKeys(env);
  op = client(env.app, keys.operatorKey);
  cl = client(env.app, keys.clientKey);
  await env.startWorkers(['test']);
});

afterAll(async () => {
  await env?.close();
});

const jobState = async (id: string) => (await cl('GET', `/v1/jobs/${id}`)).body.state as string;

describe('GET /v1/queues', () => {
  test('lists every job queue with counts, paused and live workers', async () => {
    const r = await op('GET', '/v1/queues');
    expect(r.status).toBe(200);
    const names = r.body.map((q: { name: string }) => q.name);
    expect(names).toEqual(expect.arrayContaining(['recommendations', 'email', 'image', 'report', 'test']));
    const test = r.body.find((q: { name: string }) => q.name === 'test');
    expect(test).toMatchObject({
      paused: false,
      counts: { waiting: 0, active: 0, delayed: 0, failed: 0, completed: expect.any(Number) },
    });
    // This process runs one Worker for `test`, none for `report`.
    expect(test.workers).toBeGreaterThanOrEqual(1);
    expect(r.body.find((q: { name: string }) => q.name === 'report').workers).toBe(0);
  });

  test('is for operators: a client key gets 403, no key 401', async () => {
    expect((await cl('GET', '/v1/queues')).status).toBe(403);
    expect((await cl('POST', '/v1/queues/test/pause')).status).toBe(403);
    expect((await cl('GET', '/v1/audit')).status).toBe(403);
    const none = await client(env.app)('GET', '/v1/queues');
    expect(none.status).toBe(401);
    expect(none.headers.get('content-type')).toContain('application/problem+json');
  });

  test('an unknown queue is 404', async () => {
    expect((await op('POST', '/v1/queues/nope/pause')).status).toBe(404);
  });
});

describe('pause and resume', () => {
  test('pause stops the queue from starting jobs, resume starts them; both are audited', async () => {
    const paused = await op('POST', '/v1/queues/test/pause');
    expect(paused.status).toBe(200);
    expect(paused.body.paused).toBe(true);

    const submitted = await cl('POST', '/v1/jobs', { type: 'test', payload: { value: 'after-pause' } });
    expect(submitted.status).toBe(202);
    const id = submitted.body.id as string;
    // Workers are running and idle; a paused queue hands them nothing.
    await sleep(1_500);
    expect(await jobState(id)).toBe('queued');
    const during = (await op('GET', '/v1/queues')).body.find((q: { name: string }) => q.name === 'test');
    expect(during).toMatchObject({ paused: true, counts: { waiting: 1, active: 0 } });

    const resumed = await op('POST', '/v1/queues/test/resume');
    expect(resumed.status).toBe(200);
    expect(resumed.body.paused).toBe(false);
    await waitFor(async () => (await jobState(id)) === 'succeeded', { what: 'the job to run after resume' });

    const audit = await op('GET', '/v1/audit?target_kind=queue&target=test&limit=2');
    expect(audit.status).toBe(200);
    expect(audit.body.items.map((e: { action: string }) => e.action)).toEqual(['queue.resume', 'queue.pause']);
    const [entry] = audit.body.items;
    expect(entry).toMatchObject({
      target_kind: 'queue',
      target: 'test',
      actor: { tenant: keys.tenant, role: 'operator', key_id: expect.stringMatching(/^key_/) },
    });
    expect(Date.parse(entry.at)).toBeGreaterThan(Date.now() - 60_000);
  });
});

describe('retry-failed', () => {
  test('runs every failed job of the queue again, through the ledger, and audits it', async () => {
    const marker = path.join(ROOT, 'var/test', uniqueName('retry'));
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await cl('POST', '/v1/jobs', { type: 'test', payload: { permanent: true, started_marker: marker } });
      ids.push(r.body.id);
    }
    await waitFor(async () => (await Promise.all(ids.map(jobState))).every((s) => s === 'failed'), {
      what: 'jobs to fail',
    });
    // The ledger's failure is written before BullMQ moves the job to its failed set: wait for BullMQ's count too.
    const failedInBull = async () =>
      (await op('GET', '/v1/queues')).body.find((q: { name: string }) => q.name === 'test').counts.failed;
    await waitFor(async () => (await failedInBull()) >= 2, { what: "BullMQ's failed count" });
    expect(await failedInBull()).toBe(2);

    // Paused, so the retried jobs can be seen queued before they run.
    await op('POST', '/v1/queues/test/pause');
    const r = await op('POST', '/v1/queues/test/retry-failed');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ queue: 'test', retried: 2 });
    for (const id of ids) expect(await jobState(id)).toBe('queued');
    const q = (await op('GET', '/v1/queues')).body.find((x: { name: string }) => x.name === 'test');
    expect(q.counts).toMatchObject({ waiting: 2, failed: 0 });

    await op('POST', '/v1/queues/test/resume');
    // They run again (and, being permanent failures, fail again): two starts each.
    await waitFor(async () => (await Promise.all(ids.map(jobState))).every((s) => s === 'failed'), {
      what: 'jobs to run again',
    });
    for (const id of ids)
      expect(
        readFileSync(path.join(marker, `${id}.started`), 'utf8')
          .trim()
          .split('\n'),
      ).toHaveLength(2);

    const audit = await op('GET', '/v1/audit?action=queue.retry_failed');
    expect(audit.body.items[0]).toMatchObject({ target: 'test', detail: { retried: 2 } });
    expect((await op('POST', '/v1/queues/report/retry-failed')).body.retried).toBe(0);
  });
});

describe('job actions', () => {
  test('cancel and retry through the API are audited with who did them; refused ones are not', async () => {
    const r = await cl('POST', '/v1/jobs', {
      type: 'test',
      payload: {},
      run_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    const id = r.body.id as string;
    expect((await cl('POST', `/v1/jobs/${id}/cancel`)).status).toBe(200);
    expect((await cl('POST', `/v1/jobs/${id}/cancel`)).status).toBe(409);
    expect((await op('POST', `/v1/jobs/${id}/retry`)).status).toBe(202);
    const audit = await op('GET', `/v1/audit?target_kind=job&target=${id}`);
    expect(audit.body.items.map((e: { action: string; actor: { role: string } }) => [e.action, e.actor.role])).toEqual([
      ['job.retry', 'operator'],
      ['job.cancel', 'client'],
    ]);
    expect(audit.body.items[1].detail).toMatchObject({ type: 'test', tenant: keys.tenant, state: 'cancelled' });
    // Its run_at is still an hour away: the retried job waits for it (delayed), as when it was submitted.
    expect(await jobState(id)).toBe('delayed');
  });
});

describe('GET /v1/audit', () => {
  test('is newest first with cursor pagination', async () => {
    const first = await op('GET', '/v1/audit?limit=2');
    expect(first.status).toBe(200);
    expect(first.body.items).toHaveLength(2);
    expect(first.body.next_cursor).toEqual(expect.any(String));
    const second = await op('GET', `/v1/audit?limit=2&cursor=${first.body.next_cursor}`);
    expect(second.body.items).toHaveLength(2);
    const all = [...first.body.items, ...second.body.items];
    expect(new Set(all.map((e: { id: string }) => e.id)).size).toBe(4);
    const times = all.map((e: { at: string }) => Date.parse(e.at));
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    expect((await op('GET', '/v1/audit?cursor=not-ours')).status).toBe(400);
    expect((await op('GET', '/v1/audit?limit=0')).status).toBe(400);
  });
});
