/*
 * email — payload {to: address | [addresses] (≤ 50), template, subject?, text?, data?}.
 * Side effects: one message per recipient (nobody sees the other recipients), each claimed in `email_deliveries`
 * before it is sent and settled after, so a retry or a rerun after a crash skips every recipient already sent or
 * rejected. A send whose outcome was never recorded (the process died between the server's reply and our write) is
 * sent again with the same Message-ID, derived from the job and the recipient, so it is recognisable downstream.
 * Result: {message_id (the first recipient's), accepted, rejected, message_ids? (by recipient, when several)}.
 */
import { z } from 'zod';
import { addressProblem, normalizeAddress, senderDomain } from '../mail/address.js';
import { isDbUnavailable, type Db } from '../db/index.js';
import { groupCommit } from '../group-commit.js';
import {
  claimDeliveriesMany,
  messageIdFor,
  releaseClaims,
  settleDeliveries,
  type Claim,
  type ClaimRequest,
  type Settlement,
} from '../mail/deliveries.js';
import { latestRecommendations, movieLines } from '../mail/recommendations.js';
import { DEFAULT_SUBJECT, paragraphs, render, templateData, type Rendered } from '../mail/render.js';
import { closeMailer, compose, isPermanentSmtpError, mailerFor, smtpErrorText } from '../mail/transport.js';
import { defineJob } from './registry.js';
import { PermanentError, RetryableError, type JobContext } from './types.js';

export const MAX_RECIPIENTS = 50;
/** Messages of one job in flight at once; the SMTP pool has 5 connections. */
const SEND_CONCURRENCY = 5;

const noControl = (s: string) => !/[\u0000-\u001f\u007f]/.test(s);
export const emailAddress = z.string().superRefine((v, ctx) => {
  const problem = addressProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: `not an acceptable email address: ${problem}` });
});
// Header fields: CR or LF would let a value start a new header (header injection), so none may hold one.
const subject = z.string().min(1).max(200).refine(noControl, 'must not contain CR, LF or other control characters');
const text = z.string().min(1).max(100_000);
const to = z.union([
  emailAddress,
  z.array(emailAddress).min(1).max(MAX_RECIPIENTS, `at most ${MAX_RECIPIENTS} recipients`),
]);

export const emailPayload = z.discriminatedUnion('template', [
  z.strictObject({
    to,
    template: z.literal('welcome'),
    subject: subject.optional(),
    text: text.optional(),
    data: templateData.welcome.optional(),
  }),
  z.strictObject({
    to,
    template: z.literal('recommendations'),
    subject: subject.optional(),
    text: text.optional(),
    data: templateData.recommendations,
  }),
  z.strictObject({
    to,
    template: z.literal('report_ready'),
    subject: subject.optional(),
    text: text.optional(),
    data: templateData.report_ready,
  }),
  z.strictObject({ to, template: z.literal('plain'), subject, text, data: templateData.plain.optional() }),
]);
export type EmailPayload = z.infer<typeof emailPayload>;

export interface EmailResult {
  message_id: string;
  accepted: string[];
  rejected: string[];
  message_ids?: Record<string, string>;
}

async function content(ctx: JobContext<EmailPayload>): Promise<Rendered> {
  const p = ctx.payload;
  const common = {
    subject: p.subject ?? DEFAULT_SUBJECT[p.template],
    note: p.template === 'plain' ? undefined : p.text,
  };
  switch (p.template) {
    case 'welcome':
      return render('welcome', { ...common, ...p.data });
    case 'recommendations': {
      const items = p.data.items ?? (await latestRecommendations(ctx.deps.db, ctx.tenant, p.data.user_id!));
      // A reader gets titles with their year and genres; the model's scores mean nothing to them.
      const movies = await movieLines(ctx.deps.db, ctx.tenant, items);
      return render('recommendations', { ...common, name: p.data.name, items: movies });
    }
    case 'report_ready': {
      const base = ctx.deps.config.PUBLIC_URL ?? `http://localhost:${ctx.deps.config.PORT}`;
      const link = p.data.url ?? `${base.replace(/\/$/, '')}/v1/files/${p.data.file_id}`;
      return render('report_ready', { ...common, name: p.data.name, report: p.data.report, link });
    }
    case 'plain':
      return render('plain', { ...common, text: p.text, paragraphs: paragraphs(p.text) });
  }
}

// Claims and outcomes of concurrent runs share statements (group commit): one round trip and one commit per batch,
// not per message. Each caller still waits for its own write to commit, so every message is claimed before it is sent
// and settled before its run goes on, as when each went alone.
const ledgers = new WeakMap<
  Db,
  { claim: Map<number, (r: ClaimRequest) => Promise<Claim[]>>; settle: (s: Settlement) => Promise<void> }
>();

// A value the database refuses fails its own run only; a lost connection fails the batch (and the DbGuard pauses).
const isolate = (err: unknown) => !isDbUnavailable(err);

function deliveryLedger(db: Db, leaseMs: number) {
  let l = ledgers.get(db);
  if (!l) {
    const settle = groupCommit(
      async (list: Settlement[]) => (await settleDeliveries(db, list), list.map(() => undefined)),
      { maxInFlight: 1, isolate },
    );
    l = { claim: new Map(), settle };
    ledgers.set(db, l);
  }
  let claim = l.claim.get(leaseMs);
  if (!claim) {
    claim = groupCommit((runs: ClaimRequest[]) => claimDeliveriesMany(db, runs, leaseMs), { maxInFlight: 1, isolate });
    l.claim.set(leaseMs, claim);
  }
  return { claim, settle: l.settle };
}

/** Waits between attempts to record a send's outcome: about 15 s in all, well inside the job's lock. */
const SETTLE_RETRY_MS = [100, 200, 400, 800, 1_600, 3_200, 4_000, 5_000];

/**
 * Records a send's outcome, trying again while the write fails: a message the server accepted but the ledger does not
 * know of is sent again by the next run (with the same Message-ID, but twice all the same). Gives up, and fails the
 * run, only after SETTLE_RETRY_MS; the claim then stays pending, the ambiguous case the Message-ID is for.
 */
async function settleSurely(
  settle: (s: Settlement) => Promise<void>,
  s: Settlement,
  log: JobContext<unknown>['log'],
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await settle(s);
    } catch (err) {
      if (attempt >= SETTLE_RETRY_MS.length) throw err;
      log.warn(
        { err: String((err as Error)?.message ?? err), recipient: s.recipient, state: s.state, attempt: attempt + 1 },
        'recording a send outcome failed; trying again',
      );
      await new Promise((r) => setTimeout(r, SETTLE_RETRY_MS[attempt]));
    }
  }
}

async function processEmail(ctx: JobContext<EmailPayload>): Promise<EmailResult> {
  const { config, db, log } = ctx.deps;
  const mailer = mailerFor(config, log);
  const recipients = [...new Set([ctx.payload.to].flat().map(normalizeAddress))];
  const domain = senderDomain(config.MAIL_FROM);
  // Half the BullMQ lock: a dead run's claims are older than that by the time its job is picked up again.
  const deliveries = deliveryLedger(db, config.WORKER_LOCK_MS / 2);
  const claims = await deliveries.claim({
    jobId: ctx.id,
    recipients,
    messageIds: recipients.map((r) => messageIdFor(ctx.id, r, domain)),
  });

  const state = new Map(claims.map((c) => [c.recipient, c.attempts === null ? c.prev_state! : ('pending' as string)]));
  const todo = claims.filter((c) => c.attempts !== null);
  let lastTemporary: string | undefined;
  let lastPermanent: string | undefined;
  if (todo.length) {
    // Rendered and composed once; each recipient's copy differs only in its To and Message-ID.
    const message = await compose(config.MAIL_FROM, { ...(await content(ctx)), headers: { 'X-Job-Id': ctx.id } });
    let next = 0;
    let done = 0;
    const sendNext = async () => {
      while (next < todo.length && !ctx.signal.aborted) {
        const c = todo[next++];
        if (c.prev_state === 'pending') {
          log.warn(
            { message_id: c.message_id, attempts: c.attempts },
            'an earlier send of this message has no recorded outcome; sending it again with the same Message-ID',
          );
        }
        // Only the send's own failure decides the outcome: a failed write of a 'sent' must never turn it into
        // 'deferred', which the retry would send again.
        let outcome: Settlement['state'];
        let response: string;
        try {
          const d = await mailer.send(message, c.recipient, c.message_id);
          outcome = d.accepted.length ? 'sent' : 'rejected';
          response = d.response;
          if (outcome === 'rejected') lastPermanent = response;
        } catch (err) {
          outcome = isPermanentSmtpError(err) ? 'rejected' : 'deferred';
          response = smtpErrorText(err);
          if (outcome === 'rejected') lastPermanent = response;
          else lastTemporary = response;
        }
        await settleSurely(deliveries.settle, { jobId: ctx.id, recipient: c.recipient, state: outcome, response }, log);
        state.set(c.recipient, outcome);
        done++;
        // In steps of 10%: each step is a ledger write and a published event.
        if (todo.length > 1) await ctx.progress(Math.floor((done * 10) / todo.length) * 10);
      }
    };
    await Promise.all(Array.from({ length: Math.min(SEND_CONCURRENCY, todo.length) }, sendNext));
    await releaseClaims(
      db,
      ctx.id,
      todo.slice(next).map((c) => c.recipient),
    );
    // The BullMQ limiter counts jobs; a job that sent several messages holds the queue back for the extra ones.
    if (done > 1)
      await ctx.deps.queues.get('email').rateLimit(Math.ceil(((done - 1) * 1000) / config.EMAIL_RATE_PER_SECOND));
  }

  const by = (s: string) => recipients.filter((r) => state.get(r) === s);
  const accepted = by('sent');
  const rejected = by('rejected');
  const unsent = recipients.length - accepted.length - rejected.length;
  if (unsent && !ctx.signal.aborted) {
    throw new RetryableError(
      'smtp_temporary',
      `${unsent} of ${recipients.length} recipient(s) not delivered yet (${lastTemporary ?? 'interrupted, or being sent by another run'}); will retry`,
    );
  }
  if (!accepted.length && rejected.length) {
    throw new PermanentError(
      'recipients_rejected',
      `the server rejected every recipient${lastPermanent ? `: ${lastPermanent}` : ''}`,
    );
  }
  const ids = claims.map((c) => [c.recipient, c.message_id] as const);
  return {
    message_id: ids[0][1],
    accepted,
    rejected,
    ...(ids.length > 1 ? { message_ids: Object.fromEntries(ids) } : {}),
  };
}

export const email = defineJob({
  type: 'email',
  description: 'Sends a templated email to up to 50 recipients, one message each, each exactly once',
  payload: emailPayload,
  attempts: 5,
  backoffMs: 5_000,
  concurrency: 20,
  limiter: (config) => ({ max: config.EMAIL_RATE_PER_SECOND, duration: 1000 }),
  process: processEmail,
  start: (deps) => void mailerFor(deps.config, deps.log),
  stop: (deps) => closeMailer(deps.config),
});
