// Webhook tries (one row per POST) and the sweep's view of messages not yet settled. A message is settled when
// jobs.webhook_done_for equals the job's finished_at (src/db/jobs.ts settleWebhookMessage).
import { sql } from 'kysely';
import type { Db } from './index.js';
import { TERMINAL } from './jobs.js';
import type { JobRow, NewWebhookDeliveryRow, WebhookDeliveryRow } from './types.js';

export async function insertWebhookTry(db: Db, row: NewWebhookDeliveryRow): Promise<void> {
  await db.insertInto('webhook_deliveries').values(row).execute();
}

/** Every try for a job, oldest first. */
export async function listDeliveries(db: Db, jobId: string): Promise<WebhookDeliveryRow[]> {
  return db.selectFrom('webhook_deliveries').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
}

/** Whether a try of this message was delivered or refused (either settles it for good). */
export async function messageSettledByTry(db: Db, jobId: string, messageId: string): Promise<boolean> {
  const row = await db
    .selectFrom('webhook_deliveries')
    .select('id')
    .where('job_id', '=', jobId)
    .where('message_id', '=', messageId)
    .where('outcome', 'in', ['delivered', 'refused'])
    .executeTakeFirst();
  return row !== undefined;
}

/** Ended jobs with a callback whose message is not settled, ended at least `graceMs` ago; keyset pages by id. */
export async function unsettledMessages(
  db: Db,
  graceMs: number,
  after: string | undefined,
  limit: number,
): Promise<JobRow[]> {
  let q = db
    .selectFrom('jobs')
    .selectAll()
    .where('callback_url', 'is not', null)
    .where(sql<boolean>`webhook_done_for is distinct from finished_at`)
    .where('state', 'in', TERMINAL)
    .where('finished_at', '<', sql<Date>`now() - make_interval(secs => ${graceMs / 1000})`);
  if (after) q = q.where('id', '>', after);
  return q.orderBy('id').limit(limit).execute();
}
