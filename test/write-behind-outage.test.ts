// A finish written behind that meets a PostgreSQL outage is kept and tried again until it commits: the worker's own
// write lands after the database returns, with no reconciler to cover for it (its grace is set past the test).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ledger from '../src/db/jobs.js';
import {
  client,
  createTestEnv,
  sleep,
  startProcess,
  tenantWithKeys,
  uniqueName,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';
import { privatePostgres, type PrivatePostgres } from './support/private-postgres.js';

let pg: PrivatePostgres;
let env: TestEnv;
let api: ReturnType<typeof client>;
const procs: Proc[] = [];

beforeAll(async () => {
  pg = await privatePostgres();
  env = await createTestEnv('wb_outage', { env: { DATABASE_URL: `${pg.url}/${uniqueName('wb_outage')}` } });
  api = client(env.app, (await tenantWithKeys(env)).clientKey);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.close();
  await pg?.destroy();
});

describe('write-behind through a PostgreSQL outage', () => {
  it('keeps a finish that could not commit and writes it once the database is back', { timeout: 120_000 }, async () => {
    // Finishes wait 3 s before their write, so the database can be stopped between BullMQ's finish and the ledger's.
    const worker = await startProcess('worker', env.env, {
      QUEUES: 'test',
      LEDGER_WRITE_BEHIND_MS: '3000',
      RECONCILE_GRACE_MS: '600000',
    });
    procs.push(worker);
    const r = await api('POST', '/v1/jobs', { type: 'test', payload: { value: 'through the outage' } });
    expect(r.status).toBe(202);
    const id: string = r.body.id;
    await waitFor(async () => (await env.queues.get('test').getJob(id))?.finishedOn, {
      what: 'BullMQ to record the end',
      interval: 20,
    });
    await pg.stop();
    // The held finish is tried while the database is away, and fails.
    await sleep(6_000);
    expect([worker.child.exitCode, worker.child.signalCode]).toEqual([null, null]);
    await pg.start();
    await waitFor(async () => (await ledger.findJob(env.db, id).catch(() => undefined))?.state === 'succeeded', {
      timeout: 30_000,
      what: 'the held finish to commit',
    });
    expect(await ledger.findJob(env.db, id)).toMatchObject({
      attempts: 1,
      result: { echo: 'through the outage', attempt: 1, pid: worker.child.pid },
    });
    expect(worker.output()).toMatch(/PostgreSQL unreachable: workers pause/);
  });
});
