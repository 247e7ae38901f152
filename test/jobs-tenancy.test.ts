// The ledger's tenant filters, in process against a private PostgreSQL database: every read a client's request makes
// by id, idempotency key or listing returns that tenant's rows only, and the operator's (no tenant) reads see all.
// Through db/jobs.ts's public functions only, so these hold whatever the statements become.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/index.js';
import {
  clientIdempotencyKey,
  expireIdempotencyKey,
  findByClientKey,
  findByIdempotencyKey,
  findJob,
  findJobsByIds,
  insertJobs,
  listJobs,
} from '../src/db/jobs.js';
import type { JobRow, NewJobRow } from '../src/db/types.js';
import { newId } from '../src/ids.js';
import { type UnitDb, unitDb, unitDbName } from './support/unit-db.js';

const name = unitDbName('jobs_tenancy');
let unit: UnitDb;
let db: Db;

beforeAll(async () => {
  unit = await unitDb(name, ['ann', 'bob']);
  db = unit.db;
});

afterAll(async () => {
  await unit?.close();
});

const job = (tenant: string, extra: Partial<NewJobRow> = {}): NewJobRow => ({
  id: newId(),
  tenant,
  type: 'test',
  state: 'queued',
  priority: 'normal',
  payload: '{}',
  max_attempts: 3,
  ...extra,
});
const ids = (rows: (JobRow | undefined)[]) => rows.map((r) => r?.id);

describe('ledger reads by tenant', () => {
  it('finds a job by id for its tenant, not for another tenant, and for an operator (no tenant)', async () => {
    const [a] = await insertJobs(db, [job('ann')]);
    expect((await findJob(db, a.id, 'ann'))?.id).toBe(a.id);
    expect(await findJob(db, a.id, 'bob')).toBeUndefined();
    expect((await findJob(db, a.id))?.tenant).toBe('ann');
    expect(await findJob(db, newId(), 'ann')).toBeUndefined();
    expect(await findJob(db, newId())).toBeUndefined();
  });

  it('reads a batch by id for the status cache, any tenant, and nothing for ids not in the ledger', async () => {
    const [a, b] = await insertJobs(db, [job('ann'), job('bob')]);
    const found = await findJobsByIds(db, [b.id, newId(), a.id]);
    expect(ids(found).sort()).toEqual([a.id, b.id].sort());
    expect(await findJobsByIds(db, [newId()])).toEqual([]);
  });

  it('finds a job by idempotency key within its tenant only, though another tenant used the same key', async () => {
    const [a, b] = await insertJobs(db, [
      job('ann', { idempotency_key: 'order-1', request_hash: 'h1' }),
      job('bob', { idempotency_key: 'order-1', request_hash: 'h2' }),
    ]);
    expect((await findByIdempotencyKey(db, 'ann', 'order-1'))?.id).toBe(a.id);
    expect((await findByIdempotencyKey(db, 'bob', 'order-1'))?.id).toBe(b.id);
    expect(await findByIdempotencyKey(db, 'ann', 'order-2')).toBeUndefined();
    await insertJobs(db, [job('bob', { idempotency_key: 'only-bob' })]);
    expect(await findByIdempotencyKey(db, 'ann', 'only-bob')).toBeUndefined();
  });

  it("expires only this tenant's key, and only once it is older than 24 hours", async () => {
    const [oldAnn, oldBob, youngAnn] = await insertJobs(db, [
      job('ann', { idempotency_key: 'k-old', request_hash: 'h' }),
      job('bob', { idempotency_key: 'k-old', request_hash: 'h' }),
      job('ann', { idempotency_key: 'k-young', request_hash: 'h' }),
    ]);
    await db
      .updateTable('jobs')
      .set({ created_at: sql<Date>`now() - interval '25 hours'` })
      .where('id', 'in', [oldAnn.id, oldBob.id])
      .execute();
    await db
      .updateTable('jobs')
      .set({ created_at: sql<Date>`now() - interval '23 hours'` })
      .where('id', '=', youngAnn.id)
      .execute();
    await expireIdempotencyKey(db, 'ann', 'k-old');
    await expireIdempotencyKey(db, 'ann', 'k-young');
    const keys = async (id: string) => {
      const r = (await findJob(db, id))!;
      return [r.idempotency_key, r.request_hash];
    };
    expect(await keys(oldAnn.id)).toEqual([null, null]);
    expect(await keys(oldBob.id)).toEqual(['k-old', 'h']);
    expect(await keys(youngAnn.id)).toEqual(['k-young', 'h']);
    expect(await findByIdempotencyKey(db, 'ann', 'k-old')).toBeUndefined();
    expect((await findByIdempotencyKey(db, 'bob', 'k-old'))?.id).toBe(oldBob.id);
  });

  it("names a client's key apart from internal keys, and finds it within its tenant with its window by the database's clock", async () => {
    expect(clientIdempotencyKey('order-9')).toBe('client:order-9');
    expect(clientIdempotencyKey('report_ready:x')).not.toBe('report_ready:x');
    const stored = clientIdempotencyKey('order-9');
    const [young, old, internal] = await insertJobs(db, [
      job('ann', { idempotency_key: stored, request_hash: 'h' }),
      job('bob', { idempotency_key: stored, request_hash: 'h' }),
      job('ann', { idempotency_key: 'report_ready:r1', request_hash: null }),
    ]);
    await db
      .updateTable('jobs')
      .set({ created_at: sql<Date>`now() - interval '25 hours'` })
      .where('id', '=', old.id)
      .execute();
    const annHit = await findByClientKey(db, 'ann', stored);
    expect(annHit?.job.id).toBe(young.id);
    expect(annHit?.expired).toBe(false);
    expect(annHit?.job).not.toHaveProperty('key_expired');
    const bobHit = await findByClientKey(db, 'bob', stored);
    expect(bobHit?.job.id).toBe(old.id);
    expect(bobHit?.expired).toBe(true);
    expect(await findByClientKey(db, 'ann', clientIdempotencyKey('order-10'))).toBeUndefined();
    expect(await findByClientKey(db, 'bob', 'report_ready:r1')).toBeUndefined();
    expect((await findByClientKey(db, 'ann', 'report_ready:r1'))?.job.id).toBe(internal.id);
  });

  it("lists a tenant's jobs only, newest first, filtered by type, state and page; an operator lists everyone's", async () => {
    const rows = await insertJobs(db, [
      job('ann', { type: 'list-a' }),
      job('bob', { type: 'list-a' }),
      job('ann', { type: 'list-b', state: 'failed' }),
      job('ann', { type: 'list-a', state: 'failed' }),
      job('ann', { type: 'list-a' }),
    ]);
    const [a1, b1, a2, a3, a4] = rows;
    expect(ids(await listJobs(db, { tenant: 'ann', type: 'list-a', limit: 10 }))).toEqual([a4.id, a3.id, a1.id]);
    expect(ids(await listJobs(db, { tenant: 'bob', type: 'list-a', limit: 10 }))).toEqual([b1.id]);
    expect(ids(await listJobs(db, { type: 'list-a', limit: 10 }))).toEqual([a4.id, a3.id, b1.id, a1.id]);
    expect(ids(await listJobs(db, { tenant: 'ann', state: 'failed', limit: 10 }))).toEqual(
      expect.arrayContaining([a3.id, a2.id]),
    );
    const failed = await listJobs(db, { tenant: 'ann', state: 'failed', limit: 10 });
    expect(failed.every((r) => r.state === 'failed' && r.tenant === 'ann')).toBe(true);
    expect(ids(await listJobs(db, { tenant: 'ann', type: 'list-a', limit: 2 }))).toEqual([a4.id, a3.id]);
    expect(ids(await listJobs(db, { tenant: 'ann', type: 'list-a', before: a3.id, limit: 10 }))).toEqual([a1.id]);
    expect(await listJobs(db, { tenant: 'nobody', limit: 10 })).toEqual([]);
    const all = await listJobs(db, { limit: 1000 });
    expect(new Set(all.map((r) => r.tenant))).toEqual(new Set(['ann', 'bob']));
    expect(all.map((r) => r.id)).toEqual([...all.map((r) => r.id)].sort().reverse());
  });
});
