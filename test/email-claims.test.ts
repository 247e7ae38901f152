// Issue 17, item 2, in process: who may claim an email recipient, decided alone (decideClaim) and against the real
// ledger (claimDeliveries, settleDeliveries, renewClaims on PostgreSQL), so each rule is checked where it is made.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { distinctRecipients } from '../src/jobs/email/index.js';
import {
  claimDeliveries,
  compareOwners,
  decideClaim,
  deliveriesOf,
  messageIdFor,
  releaseClaim,
  renewClaims,
  settleDeliveries,
  type ClaimedRow,
  type Owner,
} from '../src/jobs/email/deliveries.js';
import { client, createTestEnv, tenantWithKeys, type TestEnv } from './helpers.js';

const LEASE = 1_000;
const run = (gen: number, attempt: number): Owner => ({ gen, attempt });
const row = (state: ClaimedRow['state'], owner: Owner, silentMs = 0): ClaimedRow => ({ state, owner, silentMs });

describe('decideClaim', () => {
  const me = run(2, 3);
  it.each([
    ['no row yet', undefined, 'claim'],
    ['deferred by an older run', row('deferred', run(1, 1)), 'claim'],
    ['deferred by a newer run', row('deferred', run(3, 1)), 'claim'],
    ['sent', row('sent', run(1, 1), 60_000), 'settled'],
    ['rejected', row('rejected', run(9, 9), 60_000), 'settled'],
    ['pending, this very run', row('pending', run(2, 3)), 'claim'],
    ['pending, an older attempt, alive', row('pending', run(2, 2), LEASE - 1), 'held'],
    ['pending, an older attempt, silent for the lease', row('pending', run(2, 2), LEASE), 'claim'],
    ['pending, an older generation, alive', row('pending', run(1, 9), 0), 'held'],
    ['pending, an older generation, silent', row('pending', run(1, 9), LEASE + 1), 'claim'],
    ['pending, a newer attempt, silent', row('pending', run(2, 4), 60_000), 'held'],
    ['pending, a newer generation, silent', row('pending', run(3, 1), 60_000), 'held'],
  ] as const)('%s → %s', (_name, r, expected) => {
    expect(decideClaim(r, me, LEASE)).toBe(expected);
  });

  it('gives a job and recipient one Message-ID, whatever the case of the address', () => {
    const id = messageIdFor('j1', 'Ann@Example.com', 'movies.test');
    expect(id).toMatch(/^<j1\.[0-9a-f]{16}@movies\.test>$/);
    expect(messageIdFor('j1', 'ann@example.com', 'movies.test')).toBe(id);
    expect(messageIdFor('j1', 'bob@example.com', 'movies.test')).not.toBe(id);
    expect(messageIdFor('j2', 'ann@example.com', 'movies.test')).not.toBe(id);
  });

  it('orders runs by generation, then attempt', () => {
    expect(compareOwners(run(1, 5), run(2, 1))).toBe(-1);
    expect(compareOwners(run(2, 1), run(1, 5))).toBe(1);
    expect(compareOwners(run(2, 1), run(2, 2))).toBe(-1);
    expect(compareOwners(run(2, 2), run(2, 1))).toBe(1);
    expect(compareOwners(run(2, 2), run(2, 2))).toBe(0);
  });
});

describe('claims on the ledger', () => {
  let env: TestEnv;
  let jobId: string;
  const domain = 'movies.test';

  beforeAll(async () => {
    env = await createTestEnv('email_claims', { testJobs: false });
    const api = client(env.app, (await tenantWithKeys(env)).clientKey);
    // A ledger row for the claims to belong to; no worker runs it.
    const r = await api('POST', '/v1/jobs', {
      type: 'email',
      payload: { to: 'x@example.com', template: 'plain', subject: 's', text: 't' },
    });
    expect(r.status).toBe(202);
    jobId = r.body.id;
  });

  afterAll(async () => {
    await env?.close();
  });

  const req = (recipient: string, owner: Owner) => ({
    jobId,
    recipient,
    messageId: messageIdFor(jobId, recipient, domain),
    ...owner,
  });
  const claim = async (recipient: string, owner: Owner) =>
    (await claimDeliveries(env.db, [req(recipient, owner)], LEASE))[0];
  const settle = async (recipient: string, owner: Owner, state: 'sent' | 'deferred' | 'rejected') =>
    (await settleDeliveries(env.db, [{ jobId, recipient, state, response: state, ...owner }]))[0];
  const silence = (recipient: string) =>
    sql`update email_deliveries set owner_seen_at = now() - interval '1 minute'
        where job_id = ${jobId} and recipient = ${recipient}`.execute(env.db);
  const stored = (recipient: string) =>
    env.db
      .selectFrom('email_deliveries')
      .select(['state', 'owner_gen', 'owner_attempt', 'attempts'])
      .where('job_id', '=', jobId)
      .where('recipient', '=', recipient)
      .executeTakeFirstOrThrow();

  it("a second run finds a live run's claim held, and the older run's late outcome still counts", async () => {
    expect(await claim('a@example.com', run(0, 1))).toEqual({ decision: 'claim', prev_state: null, attempts: 1 });
    expect((await claim('a@example.com', run(0, 2))).decision).toBe('held');
    expect(await settle('a@example.com', run(0, 1), 'sent')).toBe(true);
    expect(await claim('a@example.com', run(0, 2))).toMatchObject({ decision: 'settled', prev_state: 'sent' });
    expect(await stored('a@example.com')).toEqual({ state: 'sent', owner_gen: 0, owner_attempt: 1, attempts: 1 });
  });

  it("a silent older run's claim is taken over, and its late outcome is not written over the new owner's", async () => {
    await claim('b@example.com', run(0, 1));
    await silence('b@example.com');
    expect(await claim('b@example.com', run(0, 2))).toEqual({ decision: 'claim', prev_state: 'pending', attempts: 2 });
    expect(await settle('b@example.com', run(0, 1), 'deferred')).toBe(false);
    expect(await settle('b@example.com', run(0, 2), 'sent')).toBe(true);
    expect(await stored('b@example.com')).toEqual({ state: 'sent', owner_gen: 0, owner_attempt: 2, attempts: 2 });
  });

  it("an older run never takes a newer run's claim, however silent", async () => {
    await claim('c@example.com', run(1, 1));
    await silence('c@example.com');
    expect((await claim('c@example.com', run(0, 5))).decision).toBe('held');
    expect(await stored('c@example.com')).toMatchObject({ state: 'pending', owner_gen: 1, owner_attempt: 1 });
  });

  it('a renewed claim is not taken over; one whose renewals stopped is', async () => {
    await claim('d@example.com', run(0, 1));
    await silence('d@example.com');
    await renewClaims(env.db, [{ jobId, recipient: 'd@example.com', ...run(0, 1) }]);
    expect((await claim('d@example.com', run(0, 2))).decision).toBe('held');
    // A renewal from a run that no longer owns the claim changes nothing.
    await silence('d@example.com');
    await renewClaims(env.db, [{ jobId, recipient: 'd@example.com', ...run(0, 0) }]);
    expect((await claim('d@example.com', run(0, 2))).decision).toBe('claim');
  });

  it('a released claim is deferred and claimable by the next run; a rejected one is settled', async () => {
    await claim('e@example.com', run(0, 1));
    await releaseClaim(env.db, { jobId, recipient: 'e@example.com', ...run(0, 1) });
    expect(await claim('e@example.com', run(0, 2))).toEqual({ decision: 'claim', prev_state: 'deferred', attempts: 2 });
    expect(await settle('e@example.com', run(0, 2), 'rejected')).toBe(true);
    expect((await claim('e@example.com', run(0, 3))).decision).toBe('settled');
  });

  it('one batch holding the same recipient for two runs: the first claims it, the second finds it held', async () => {
    const out = await claimDeliveries(
      env.db,
      [req('f@example.com', run(0, 1)), req('f@example.com', run(0, 2))],
      LEASE,
    );
    expect(out.map((c) => c.decision)).toEqual(['claim', 'held']);
  });

  it('a batch mixing new and existing recipients answers each request in its own place', async () => {
    await claim('h1@example.com', run(0, 1));
    await claim('h2@example.com', run(0, 1));
    await settle('h2@example.com', run(0, 1), 'sent');
    const out = await claimDeliveries(
      env.db,
      [req('h3@example.com', run(0, 2)), req('h1@example.com', run(0, 2)), req('h2@example.com', run(0, 2))],
      LEASE,
    );
    expect(out).toEqual([
      { decision: 'claim', prev_state: null, attempts: 1 },
      { decision: 'held', prev_state: 'pending', attempts: null },
      { decision: 'settled', prev_state: 'sent', attempts: null },
    ]);
    expect(await stored('h1@example.com')).toEqual({ state: 'pending', owner_gen: 0, owner_attempt: 1, attempts: 1 });
  });

  it('a recipient repeated in one batch is decided in order, after the claims before it', async () => {
    await claim('i@example.com', run(0, 1));
    await silence('i@example.com');
    const out = await claimDeliveries(
      env.db,
      [
        req('i@example.com', run(0, 2)),
        req('i2@example.com', run(0, 2)),
        req('i@example.com', run(0, 3)),
        req('i@example.com', run(0, 2)),
      ],
      LEASE,
    );
    expect(out).toEqual([
      { decision: 'claim', prev_state: 'pending', attempts: 2 },
      { decision: 'claim', prev_state: null, attempts: 1 },
      { decision: 'held', prev_state: 'pending', attempts: null },
      { decision: 'claim', prev_state: 'pending', attempts: 3 },
    ]);
  });

  it('settles several sends in one call, in input order, only where the run owns the claim', async () => {
    await claim('j1@example.com', run(0, 1));
    await claim('j2@example.com', run(0, 1));
    const long = 'x'.repeat(1500);
    const out = await settleDeliveries(env.db, [
      { jobId, recipient: 'j1@example.com', state: 'rejected', response: 'no', ...run(0, 2) },
      { jobId, recipient: 'j2@example.com', state: 'sent', response: long, ...run(0, 1) },
      { jobId, recipient: 'j1@example.com', state: 'deferred', response: '451 later', ...run(0, 1) },
      // The same claim twice: the second finds it settled already.
      { jobId, recipient: 'j2@example.com', state: 'deferred', response: 'again', ...run(0, 1) },
    ]);
    expect(out).toEqual([false, true, true, false]);
    const rows = await env.db
      .selectFrom('email_deliveries')
      .select(['recipient', 'state', 'response', 'sent_at'])
      .where('job_id', '=', jobId)
      .where('recipient', 'in', ['j1@example.com', 'j2@example.com'])
      .orderBy('recipient')
      .execute();
    expect(rows.map((r) => [r.recipient, r.state, r.response?.length, r.sent_at !== null])).toEqual([
      ['j1@example.com', 'deferred', 9, false],
      ['j2@example.com', 'sent', 1000, true],
    ]);
    expect(rows[0].response).toBe('451 later');
  });

  it("releases only its own pending claim: another run's release changes nothing", async () => {
    await claim('k@example.com', run(1, 1));
    for (const other of [run(0, 1), run(1, 2), run(2, 1)])
      await releaseClaim(env.db, { jobId, recipient: 'k@example.com', ...other });
    expect(await stored('k@example.com')).toMatchObject({ state: 'pending', owner_gen: 1, owner_attempt: 1 });
    await settle('k@example.com', run(1, 1), 'sent');
    await releaseClaim(env.db, { jobId, recipient: 'k@example.com', ...run(1, 1) });
    expect(await stored('k@example.com')).toMatchObject({ state: 'sent' });
  });

  it('a renewal of other recipients or of another job does not keep a silent claim alive', async () => {
    await claim('l@example.com', run(0, 1));
    await claim('l2@example.com', run(0, 1));
    await silence('l@example.com');
    await renewClaims(env.db, []);
    await renewClaims(env.db, [
      { jobId, recipient: 'l2@example.com', ...run(0, 1) },
      { jobId: '00000000-0000-0000-0000-000000000000', recipient: 'l@example.com', ...run(0, 1) },
    ]);
    expect((await claim('l@example.com', run(0, 2))).decision).toBe('claim');
  });

  it('lists a job’s deliveries in the order they were first claimed, and no other job’s', async () => {
    const rows = await deliveriesOf(env.db, jobId);
    expect(rows.length).toBeGreaterThan(10);
    expect(rows.every((r) => r.job_id === jobId)).toBe(true);
    const times = rows.map((r) => new Date(r.created_at).getTime());
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(rows[0].recipient).toBe('a@example.com');
    expect(await deliveriesOf(env.db, '00000000-0000-0000-0000-000000000000')).toEqual([]);
  });

  it('inserts a batch in one order (job, then recipient) whatever order it came in, so no two batches deadlock', async () => {
    const list = ['m5', 'm1', 'M3', 'm4', 'm2', 'm10'].map((r) => `${r}@example.com`);
    await claimDeliveries(
      env.db,
      list.map((r) => req(r, run(0, 1))),
      LEASE,
    );
    // The heap keeps one insert statement's rows in the order it inserted them.
    const { rows } = await sql<{ recipient: string }>`
      select recipient from email_deliveries where job_id = ${jobId} and recipient = any(${list}) order by ctid`.execute(
      env.db,
    );
    expect(rows.map((r) => r.recipient)).toEqual([...list].sort());
  });

  it('two runs claiming the same recipients at once: each recipient is claimed by exactly one', async () => {
    const list = Array.from({ length: 40 }, (_, i) => `g${i}@example.com`);
    const [one, two] = await Promise.all([
      claimDeliveries(
        env.db,
        list.map((r) => req(r, run(0, 1))),
        LEASE,
      ),
      claimDeliveries(
        env.db,
        [...list].reverse().map((r) => req(r, run(0, 2))),
        LEASE,
      ),
    ]);
    const byOne = new Set(list.filter((_, i) => one[i].decision === 'claim'));
    const byTwo = new Set([...list].reverse().filter((_, i) => two[i].decision === 'claim'));
    for (const r of list) expect(Number(byOne.has(r)) + Number(byTwo.has(r)), r).toBe(1);
  });
});

describe('distinctRecipients (issue 17, item 13)', () => {
  it('compares whole addresses case-insensitively, lowercases the domain, keeps the first spelling', () => {
    expect(distinctRecipients(['Bob@X.co', 'bob@x.CO', 'BOB@x.co', 'ann@Example.com', 'Ann@example.COM'])).toEqual([
      'Bob@x.co',
      'ann@example.com',
    ]);
    expect(distinctRecipients('Zed@EXAMPLE.com')).toEqual(['Zed@example.com']);
  });
});
