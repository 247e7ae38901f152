// The email ledger (email_deliveries): one row per (job, recipient), claimed before each send and settled after it.
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import type { EmailDeliveryState } from '../db/types.js';

/** Stable per job and recipient: a resend after an ambiguous crash carries the same Message-ID, so it can be deduplicated. */
export function messageIdFor(jobId: string, recipient: string, domain: string): string {
  const h = createHash('sha256').update(recipient.toLowerCase()).digest('hex').slice(0, 16);
  return `<${jobId}.${h}@${domain}>`;
}

export interface Claim {
  recipient: string;
  message_id: string;
  /** The state before this run: null for a new recipient. */
  prev_state: EmailDeliveryState | null;
  prev_response: string | null;
  /** Set when this run claimed the recipient (it must send); null when it was already settled (sent or rejected). */
  attempts: number | null;
}

export interface ClaimRequest {
  jobId: string;
  recipients: string[];
  messageIds: string[];
}

/**
 * Claims the recipients of one or more runs: inserts those not yet in the ledger and re-claims those still pending or
 * deferred, returning every recipient with its previous state. Settled rows (sent, rejected) and fresh claims of
 * another run (pending for less than `leaseMs`) are left alone, which is what makes a retry skip them. `prev` reads the
 * snapshot from before the upsert, so it tells a fresh row from a row a crashed run had claimed (prev_state 'pending':
 * the outcome of that send is unknown). Runs of different jobs starting together share one statement and one commit;
 * each run gets its own claims, in its recipients' order, all committed before this returns (claim before send).
 */
export async function claimDeliveriesMany(db: Db, runs: ClaimRequest[], leaseMs: number): Promise<Claim[][]> {
  const out: Claim[][] = runs.map(() => []);
  // One upsert may not touch a row twice: runs of the same job (a run whose lock lapsed, and its successor) go in
  // separate statements, in order.
  for (const round of rounds(runs, (r) => r.jobId)) {
    const jobIds: string[] = [];
    const recipients: string[] = [];
    const messageIds: string[] = [];
    const owner: number[] = [];
    for (const i of round) {
      const r = runs[i];
      r.recipients.forEach((recipient, k) => {
        jobIds.push(r.jobId);
        recipients.push(recipient);
        messageIds.push(r.messageIds[k]);
        owner.push(i);
      });
    }
    const { rows } = await sql<Claim & { ord: number }>`
      with input as (
        select * from unnest(${jobIds}::uuid[], ${recipients}::text[], ${messageIds}::text[])
          with ordinality as r(job_id, recipient, message_id, ord)
      ),
      prev as (
        select d.job_id, d.recipient, d.state, d.response from email_deliveries d join input i using (job_id, recipient)
      ),
      claimed as (
        insert into email_deliveries (job_id, recipient, state, message_id)
        select job_id, recipient, 'pending', message_id from input
        on conflict (job_id, recipient) do update
          set state = 'pending', attempts = email_deliveries.attempts + 1, updated_at = now()
          where email_deliveries.state = 'deferred'
            -- A pending claim younger than the lease may belong to a run still sending (its BullMQ lock lapsed while it
            -- was alive): leave it, and this run retries later. An older one belongs to a run that died.
            or (email_deliveries.state = 'pending' and email_deliveries.updated_at < now() - make_interval(secs => ${leaseMs / 1000}))
        returning job_id, recipient, attempts
      )
      select i.ord, i.recipient, i.message_id, p.state as prev_state, p.response as prev_response, c.attempts
      from input i left join prev p using (job_id, recipient) left join claimed c using (job_id, recipient)
      order by i.ord`.execute(db);
    for (const { ord, ...claim } of rows) out[owner[Number(ord) - 1]].push(claim);
  }
  return out;
}

export interface Settlement {
  jobId: string;
  recipient: string;
  state: 'sent' | 'deferred' | 'rejected';
  response: string;
}

/** Outcomes of several sends in one statement (sends of concurrent runs ending together share a commit). */
export async function settleDeliveries(db: Db, settled: Settlement[]): Promise<void> {
  for (const round of rounds(settled, (s) => `${s.jobId}\n${s.recipient}`)) {
    const list = round.map((i) => settled[i]);
    await sql`
      update email_deliveries d
      set state = v.state, response = v.response, updated_at = now(), sent_at = case when v.state = 'sent' then now() else d.sent_at end
      from unnest(${list.map((s) => s.jobId)}::uuid[], ${list.map((s) => s.recipient)}::text[], ${list.map((s) => s.state)}::text[],
        ${list.map((s) => s.response.slice(0, 1000))}::text[]) as v(job_id, recipient, state, response)
      where d.job_id = v.job_id and d.recipient = v.recipient`.execute(db);
  }
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

/** Claimed recipients a run never got to (it was cancelled): known not sent, so the next run need not wonder. */
export async function releaseClaims(db: Db, jobId: string, recipients: string[]): Promise<void> {
  if (!recipients.length) return;
  await db
    .updateTable('email_deliveries')
    .set({ state: 'deferred', response: 'not attempted', updated_at: sql`now()` })
    .where('job_id', '=', jobId)
    .where('recipient', 'in', recipients)
    .where('state', '=', 'pending')
    .execute();
}

export async function deliveriesOf(db: Db, jobId: string) {
  return db.selectFrom('email_deliveries').selectAll().where('job_id', '=', jobId).orderBy('created_at').execute();
}
