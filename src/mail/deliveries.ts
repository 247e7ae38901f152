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

/**
 * One statement per run: inserts the recipients not yet in the ledger and re-claims those still pending or deferred,
 * returning every recipient with its previous state. Settled rows (sent, rejected) and fresh claims of another run
 * (pending for less than `leaseMs`) are left alone, which is what
 * makes a retry skip them. `prev` reads the snapshot from before the upsert, so it tells a fresh row from a row a
 * crashed run had claimed (prev_state 'pending': the outcome of that send is unknown).
 */
export async function claimDeliveries(db: Db, jobId: string, recipients: string[], messageIds: string[], leaseMs: number): Promise<Claim[]> {
  const { rows } = await sql<Claim>`
    with input as (
      select * from unnest(${recipients}::text[], ${messageIds}::text[]) with ordinality as r(recipient, message_id, ord)
    ),
    prev as (
      select recipient, state, response from email_deliveries where job_id = ${jobId}
    ),
    claimed as (
      insert into email_deliveries (job_id, recipient, state, message_id)
      select ${jobId}, recipient, 'pending', message_id from input
      on conflict (job_id, recipient) do update
        set state = 'pending', attempts = email_deliveries.attempts + 1, updated_at = now()
        where email_deliveries.state = 'deferred'
          -- A pending claim younger than the lease may belong to a run still sending (its BullMQ lock lapsed while it
          -- was alive): leave it, and this run retries later. An older one belongs to a run that died.
          or (email_deliveries.state = 'pending' and email_deliveries.updated_at < now() - make_interval(secs => ${leaseMs / 1000}))
      returning recipient, attempts
    )
    select i.recipient, i.message_id, p.state as prev_state, p.response as prev_response, c.attempts
    from input i left join prev p using (recipient) left join claimed c using (recipient)
    order by i.ord`.execute(db);
  return rows;
}

export async function settleDelivery(db: Db, jobId: string, recipient: string, state: 'sent' | 'deferred' | 'rejected', response: string): Promise<void> {
  await db
    .updateTable('email_deliveries')
    .set({ state, response: response.slice(0, 1000), updated_at: sql`now()`, ...(state === 'sent' ? { sent_at: sql`now()` } : {}) })
    .where('job_id', '=', jobId)
    .where('recipient', '=', recipient)
    .execute();
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
