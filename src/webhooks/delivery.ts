// Webhook delivery: a job with `callback_url` that ends gets its final state POSTed there, signed per Standard Webhooks.
//
// Deliveries ride an internal BullMQ queue (`webhooks`) served by every worker process, so they get BullMQ's retries
// with exponential backoff and survive restarts. Every try is a row in webhook_deliveries. The message id
// (`webhook-id`) is the same on every try of one message, so receivers can drop repeats.
import type { Services } from '../services.js';
import { UnrecoverableError } from 'bullmq';
import { Counter } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import type { Config } from '../config.js';
import * as ledger from '../db/jobs.js';
import { webhookSecretOf } from '../db/tenants.js';
import type { JobRow } from '../db/types.js';
import { insertWebhookTry } from '../db/webhooks.js';
import { registry } from '../metrics.js';
import type { Queues } from '../queues/index.js';
import type { WebhookOutcome } from '../domain.js';
import { RefusedError } from './guard.js';
import { postJson } from './http.js';

export const WEBHOOK_QUEUE = 'webhooks';

const tries = new Counter({
  name: 'webhook_deliveries_total',
  help: 'Webhook delivery tries by outcome',
  labelNames: ['outcome'],
  registers: [registry],
});

export interface WebhookData {
  job_id: string;
  /** The terminal state this message reports; a job retried since then is not reported twice. */
  state: string;
  finished_at: string | null;
}

export function messageId(row: Pick<JobRow, 'id' | 'finished_at'>): string {
  return `msg_${row.id.replaceAll('-', '')}_${row.finished_at?.getTime() ?? 0}`;
}

/** Enqueues the delivery of a job's terminal state, when it has a callback. A repeat for the same end is a no-op. */
export async function enqueueWebhook(queues: Queues, config: Config, row: JobRow | undefined): Promise<void> {
  if (!row?.callback_url || !ledger.TERMINAL.includes(row.state)) return;
  const data: WebhookData = { job_id: row.id, state: row.state, finished_at: row.finished_at?.toISOString() ?? null };
  await queues.get(WEBHOOK_QUEUE).add('deliver', data, {
    jobId: messageId(row),
    attempts: config.WEBHOOK_ATTEMPTS,
    backoff: { type: 'exponential', delay: config.WEBHOOK_BACKOFF_MS, jitter: 0.3 },
    removeOnComplete: { age: 3600, count: 1000 },
    removeOnFail: { age: 7 * 24 * 3600, count: 5000 },
  });
}

/** The body receivers get: Standard Webhooks' recommended `{type, timestamp, data}`. */
function webhookBody(row: JobRow): string {
  const job = ledger.toApiJob(row);
  return JSON.stringify({
    type: `job.${row.state}`,
    timestamp: job.finished_at ?? new Date().toISOString(),
    data: job,
  });
}

type Outcome = WebhookOutcome | 'skipped';

/** One try: sign, POST, record. Throws to have BullMQ retry; UnrecoverableError when retrying cannot help. */
export async function deliverOnce(
  deps: Pick<Services, 'config' | 'db' | 'log'>,
  data: WebhookData,
  attempt: number,
  final: boolean,
): Promise<Outcome> {
  const { db, config, log } = deps;
  const row = await ledger.findJob(db, data.job_id);
  // The job is gone, or was retried and is running again: this message is out of date.
  if (!row?.callback_url || row.state !== data.state || (row.finished_at?.toISOString() ?? null) !== data.finished_at)
    return 'skipped';
  const secret = await webhookSecretOf(db, row.tenant);
  if (secret === undefined) {
    await ledger.settleWebhookMessage(db, row);
    return 'skipped';
  }

  const id = messageId(row);
  const body = webhookBody(row);
  const now = new Date();
  const signature = new Webhook(secret).sign(id, now, body);
  const headers = {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
    'webhook-signature': signature,
  };
  const started = performance.now();
  const record = async (outcome: WebhookOutcome, status_code: number | null, error: string | null) => {
    tries.inc({ outcome });
    await insertWebhookTry(db, {
      job_id: row.id,
      tenant: row.tenant,
      message_id: id,
      event: `job.${row.state}`,
      url: row.callback_url!,
      attempt,
      outcome,
      status_code,
      error: error?.slice(0, 1000) ?? null,
      duration_ms: Math.round(performance.now() - started),
    });
    // This message is done for good: delivered, refused, or its last try failed at the receiver.
    if (outcome !== 'failed' || final) await ledger.settleWebhookMessage(db, row);
  };

  let status: number;
  try {
    ({ status } = await postJson(
      row.callback_url,
      body,
      headers,
      { allowPrivate: config.WEBHOOK_ALLOW_PRIVATE },
      config.WEBHOOK_TIMEOUT_MS,
    ));
  } catch (err) {
    if (err instanceof RefusedError) {
      await record('refused', null, err.message);
      log.warn({ job_id: row.id, err: err.message }, 'webhook refused');
      throw new UnrecoverableError(err.message);
    }
    const e = err as { code?: string; message?: string };
    await record('failed', null, `${e.code ?? 'error'}: ${e.message ?? String(err)}`);
    log.warn({ job_id: row.id, attempt, final, err: e.message }, 'webhook try failed');
    throw err;
  }
  if (status >= 200 && status < 300) {
    await record('delivered', status, null);
    return 'delivered';
  }
  await record('failed', status, `receiver answered ${status}`);
  log.warn({ job_id: row.id, attempt, final, status }, 'webhook try failed');
  // 410 Gone: the receiver says this endpoint will never take it.
  if (status === 410) throw new UnrecoverableError('receiver answered 410 Gone');
  throw new Error(`receiver answered ${status}`);
}
