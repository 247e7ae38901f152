// The email ledger (email_deliveries): one row per (job, recipient), claimed by one run just before its send and
// settled by that run after it.
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../../db/index.js';
import type { EmailDeliveryState } from '../../db/types.js';

/** Stable per job and recipient: a resend after an ambiguous crash carries the same Message-ID, so it can be deduplicated. */
export function messageIdFor(jobId: string, recipient: string, domain: string): string {
  const h = createHash('sha256').update(recipient.toLowerCase()).digest('hex').slice(0, 16);
  return `<${jobId}.${h}@${domain}>`;
}

/** A run of a job: the owner of the claims it makes. Runs are ordered by generation, then attempt. */
export interface Owner {
  gen: number;
  attempt: number;
}

/** -1, 0 or 1 as run `a` is older than, the same as, or newer than run `b`. */
export function compareOwners(a: Owner, b: Owner): number {
  if (a.gen !== b.gen) return a.gen < b.gen ? -1 : 1;
  if (a.attempt !== b.attempt) return a.attempt < b.attempt ? -1 : 1;
  return 0;
}

/** A recipient's ledger row as a claim sees it. */
export interface ClaimedRow {
  state: EmailDeliveryState;
  owner: Owner;
  /** Since the owner last showed it was alive (claimed, or renewed the claim), by the database's clock. */
  silentMs: number;
}

/**
 * What a run that wants to send to a recipient may do, given the recipient's row:
 * - `claim`: no row, a deferred row (not delivered, nobody sending), or a pending row this very run claimed (a claim
 *   whose commit it never heard of), or a pending row of an older run that has been silent for `leaseMs` (it died
 *   mid-send, or cannot reach the ledger: its outcome is unknown, so the send repeats with the same Message-ID);
 * - `settled`: sent or rejected, by any run: never again;
 * - `held`: pending under a run that may still be sending it. A newer run's claim is never taken (this run is the
 *   one whose lock lapsed), and an older run's only once it is silent: a run keeps renewing the claims of its sends
 *   under way however slow the server, even after its BullMQ lock lapsed, so its successor waits for the outcome.
 */
export function decideClaim(row: ClaimedRow | undefined, me: Owner, leaseMs: number): 'claim' | 'settled' | 'held' {
  if (!row || row.state === 'deferred') return 'claim';
  if (row.state === 'sent' || row.state === 'rejected') return 'settled';
  const order = compareOwners(row.owner, me);
  if (order === 0) return 'claim';
  if (order < 0 && row.silentMs >= leaseMs) return 'claim';
  return 'held';
}

export interface ClaimRequest extends Owner {
  jobId: string;
  recipient: string;
  messageId: string;
}

export interface Claim {
  decision: 'claim' | 'settled' | 'held';
  /** The row's state before this claim: null for a recipient new to the ledger. */
  prev_state: EmailDeliveryState | null;
  /** The claim's attempts counter once claimed (1 for a first claim). */
  attempts: number | null;
}

const keyOf = (r: { jobId: string; recipient: string }) => `${r.jobId}\n${r.recipient}`;
const byKey = (a: { jobId: string; recipient: string }, b: { jobId: string; recipient: string }) =>
  a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : a.recipient < b.recipient ? -1 : a.recipient > b.recipient ? 1 : 0;

/**
 * Claims one recipient for each request (several runs' sends claimed together share the statements). A recipient
 * new to the ledger is claimed by one insert; an existing row is read under a row lock, decided by `decideClaim`, and
 * taken over in the same transaction, so two runs never both claim one recipient. Each claim is committed before this
 * returns (claim before send).
 */
export async function claimDeliveries(db: Db, requests: ClaimRequest[], leaseMs: number): Promise<Claim[]> {
  const out: Claim[] = new Array(requests.length);
  // One statement may not touch a row twice: a request repeated in a batch is decided after the first.
  for (const round of rounds(requests, keyOf)) {
    // Inserted in one order everywhere, so two statements inserting the same rows wait for each other, never crosswise.
    const list = round.map((i) => requests[i]).sort(byKey);
    const inserted = await sql<{ job_id: string; recipient: string }>`
      insert into email_deliveries (job_id, recipient, state, message_id, owner_gen, owner_attempt)
      select * from unnest(${list.map((r) => r.jobId)}::uuid[], ${list.map((r) => r.recipient)}::text[],
        ${list.map(() => 'pending')}::text[], ${list.map((r) => r.messageId)}::text[], ${list.map((r) => r.gen)}::int[],
        ${list.map((r) => r.attempt)}::int[])
      on conflict (job_id, recipient) do nothing
      returning job_id, recipient`.execute(db);
    const isNew = new Set(inserted.rows.map((r) => keyOf({ jobId: r.job_id, recipient: r.recipient })));
    const existing = round.filter((i) => !isNew.has(keyOf(requests[i])));
    const decided = existing.length
      ? await claimExisting(
          db,
          existing.map((i) => requests[i]),
          leaseMs,
        )
      : new Map<string, Claim>();
    for (const i of round) out[i] = isNew.has(keyOf(requests[i])) ? { ...fresh } : decided.get(keyOf(requests[i]))!;
  }
  return out;
}

const fresh: Claim = { decision: 'claim', prev_state: null, attempts: 1 };

async function claimExisting(db: Db, list: ClaimRequest[], leaseMs: number): Promise<Map<string, Claim>> {
  return db.transaction().execute(async (tx) => {
    // Locked in key order, so two transactions over the same rows never wait on each other crosswise.
    const { rows } = await sql<{
      job_id: string;
      recipient: string;
      state: EmailDeliveryState;
      owner_gen: number;
      owner_attempt: number;
      silent_ms: number;
    }>`
      select d.job_id, d.recipient, d.state, d.owner_gen, d.owner_attempt,
        (extract(epoch from (now() - d.owner_seen_at)) * 1000)::float8 as silent_ms
      from email_deliveries d
      join unnest(${list.map((r) => r.jobId)}::uuid[], ${list.map((r) => r.recipient)}::text[]) as v(job_id, recipient)
        using (job_id, recipient)
      order by d.job_id, d.recipient
      for update of d`.execute(tx);
    const found = new Map(rows.map((r) => [keyOf({ jobId: r.job_id, recipient: r.recipient }), r]));
    const out = new Map<string, Claim>();
    const take: ClaimRequest[] = [];
    for (const r of list) {
      const row = found.get(keyOf(r));
      // Gone since the insert found it: its job was deleted. Nothing to send.
      if (!row) {
        out.set(keyOf(r), { decision: 'held', prev_state: null, attempts: null });
        continue;
      }
      const decision = decideClaim(
        { state: row.state, owner: { gen: row.owner_gen, attempt: row.owner_attempt }, silentMs: row.silent_ms },
        r,
        leaseMs,
      );
      out.set(keyOf(r), { decision, prev_state: row.state, attempts: null });
      if (decision === 'claim') take.push(r);
    }
    if (take.length) {
      const claimed = await sql<{ job_id: string; recipient: string; attempts: number }>`
        update email_deliveries d
        set state = 'pending', attempts = d.attempts + 1, owner_gen = v.gen, owner_attempt = v.attempt,
          owner_seen_at = now(), updated_at = now()
        from unnest(${take.map((r) => r.jobId)}::uuid[], ${take.map((r) => r.recipient)}::text[],
          ${take.map((r) => r.gen)}::int[], ${take.map((r) => r.attempt)}::int[]) as v(job_id, recipient, gen, attempt)
        where d.job_id = v.job_id and d.recipient = v.recipient
        returning d.job_id, d.recipient, d.attempts`.execute(tx);
      for (const c of claimed.rows) out.get(keyOf({ jobId: c.job_id, recipient: c.recipient }))!.attempts = c.attempts;
    }
    return out;
  });
}

export interface Settlement extends Owner {
  jobId: string;
  recipient: string;
  state: 'sent' | 'deferred' | 'rejected';
  response: string;
}

/**
 * Outcomes of several sends in one statement (sends of concurrent runs ending together share a commit). Only the
 * claim's owner settles it: a run whose claim was taken over (it was silent too long) must not overwrite the outcome
 * of the run that took it, e.g. turn its 'sent' into 'deferred', which the next run would send again. Returns, in
 * input order, whether each outcome was written.
 */
export async function settleDeliveries(db: Db, settled: Settlement[]): Promise<boolean[]> {
  // Per request, not per recipient: a recipient repeated in the batch (two runs' outcomes) is written by one of them.
  const written: boolean[] = settled.map(() => false);
  for (const round of rounds(settled, keyOf)) {
    const list = round.map((i) => settled[i]);
    const { rows } = await sql<{ job_id: string; recipient: string }>`
      update email_deliveries d
      set state = v.state, response = v.response, updated_at = now(), sent_at = case when v.state = 'sent' then now() else d.sent_at end
      from unnest(${list.map((s) => s.jobId)}::uuid[], ${list.map((s) => s.recipient)}::text[], ${list.map((s) => s.state)}::text[],
        ${list.map((s) => s.response.slice(0, 1000))}::text[], ${list.map((s) => s.gen)}::int[], ${list.map((s) => s.attempt)}::int[])
        as v(job_id, recipient, state, response, gen, attempt)
      where d.job_id = v.job_id and d.recipient = v.recipient
        and d.state = 'pending' and d.owner_gen = v.gen and d.owner_attempt = v.attempt
      returning d.job_id, d.recipient`.execute(db);
    const got = new Set(rows.map((r) => keyOf({ jobId: r.job_id, recipient: r.recipient })));
    for (const i of round) written[i] = got.has(keyOf(settled[i]));
  }
  return written;
}

/** A run's sign of life on the claims of its sends under way (one statement for all of a process's). */
export async function renewClaims(db: Db, claims: (Owner & { jobId: string; recipient: string })[]): Promise<void> {
  if (!claims.length) return;
  // Rows locked in the order claims lock them, so a renewal and a claim over the same rows never deadlock.
  await sql`
    update email_deliveries d set owner_seen_at = now()
    from (
      select e.job_id, e.recipient from email_deliveries e
      join unnest(${claims.map((c) => c.jobId)}::uuid[], ${claims.map((c) => c.recipient)}::text[],
        ${claims.map((c) => c.gen)}::int[], ${claims.map((c) => c.attempt)}::int[]) as v(job_id, recipient, gen, attempt)
        on e.job_id = v.job_id and e.recipient = v.recipient
      where e.state = 'pending' and e.owner_gen = v.gen and e.owner_attempt = v.attempt
      order by e.job_id, e.recipient
      for update of e
    ) as mine
    where d.job_id = mine.job_id and d.recipient = mine.recipient`.execute(db);
}

/** A claim its run never sent on (the run was told to stop): known not sent, so the next run need not wonder. */
export async function releaseClaim(db: Db, c: Owner & { jobId: string; recipient: string }): Promise<void> {
  await db
    .updateTable('email_deliveries')
    .set({ state: 'deferred', response: 'not attempted', updated_at: sql`now()` })
    .where('job_id', '=', c.jobId)
    .where('recipient', '=', c.recipient)
    .where('state', '=', 'pending')
    .where('owner_gen', '=', c.gen)
    .where('owner_attempt', '=', c.attempt)
    .execute();
}

/** Indexes of `items` split into consecutive groups in which no key repeats (usually one group). */
function rounds<T>(items: T[], key: (item: T) => string): number[][] {
  const out: number[][] = [];
  const seen: Set<string>[] = [];
  items.forEach((item, i) => {
    const k = key(item);
    let r = 0;
    // The next group after the last one holding this key, so a key's items keep their order.
    for (let j = seen.length - 1; j >= 0; j--) {
      if (seen[j].has(k)) {
        r = j + 1;
        break;
      }
    }
    if (r === seen.length) {
      seen.push(new Set());
      out.push([]);
    }
    seen[r].add(k);
    out[r].push(i);
  });
  return out;
}

export async function deliveriesOf(db: Db, jobId: string) {
  return db.selectFrom('email_deliveries').selectAll().where('job_id', '=', jobId).orderBy('created_at').execute();
}
