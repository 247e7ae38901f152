import { type Kysely, sql } from 'kysely';

// Fixes from the review of issue 17 (items 3, 6, 7).
// - files.visibility: 'operators' for the output of a report across every tenant. The file is kept under the
//   submitting operator's tenant, but only operator and viewer keys may read it, not that tenant's client keys.
//   Outputs already written by such reports are marked.
// - jobs.webhook_done_for: the finished_at whose webhook message is settled (delivered, refused, out of tries). The
//   webhook sweep looks at every ended job with a callback whose current message is not settled, however long ago it
//   ended, through a partial index of those rows; the old 24 h window and its index go. Jobs whose delivery was
//   already tried are marked settled (the old sweep's rule), so nothing already handled is sent again.
// - Clients' Idempotency-Keys move under the 'client:' prefix, apart from internal keys (`schedule:…` ticks, which
//   have no request hash, and `report_ready:…` email jobs), so a client can never name an internal key.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('files')
    .addColumn('visibility', 'text', (c) =>
      c.notNull().defaultTo('tenant').check(sql`visibility in ('tenant', 'operators')`),
    )
    .execute();
  await sql`
    update files set visibility = 'operators'
    where job_id in (select id from jobs where type = 'report' and payload->>'scope' = 'all')`.execute(db);

  await db.schema.alterTable('jobs').addColumn('webhook_done_for', 'timestamptz').execute();
  await sql`
    update jobs set webhook_done_for = finished_at
    where callback_url is not null and finished_at is not null
      and exists (select 1 from webhook_deliveries d where d.job_id = jobs.id)`.execute(db);
  await sql`drop index if exists jobs_callback_finished_idx`.execute(db);
  await sql`
    create index jobs_webhook_pending_idx on jobs (id)
    where callback_url is not null and webhook_done_for is distinct from finished_at`.execute(db);

  await sql`
    update jobs set idempotency_key = 'client:' || idempotency_key
    where idempotency_key is not null and request_hash is not null
      and not (type = 'email' and idempotency_key like 'report_ready:%')`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    update jobs set idempotency_key = substr(idempotency_key, 8)
    where idempotency_key like 'client:%'`.execute(db);
  await sql`drop index if exists jobs_webhook_pending_idx`.execute(db);
  await sql`create index jobs_callback_finished_idx on jobs (finished_at) where callback_url is not null`.execute(db);
  await db.schema.alterTable('jobs').dropColumn('webhook_done_for').execute();
  await db.schema.alterTable('files').dropColumn('visibility').execute();
}
