/*
 * email — payload {to: address | [addresses] (≤ 50), template, subject?, text?, data?}.
 * Side effects: one message per distinct recipient (compared case-insensitively; nobody sees the other recipients),
 * each claimed in `email_deliveries` by this run (job, generation, attempt) just before it is sent and settled by it
 * after, so a retry or a rerun after a crash skips every recipient already sent or rejected, and a run whose BullMQ
 * lock lapsed while it was sending is never doubled by its successor. A send whose outcome was never recorded (the
 * process died between the server's reply and our write) is sent again with the same Message-ID, derived from the job
 * and the recipient, so it is recognisable downstream.
 * Result: {message_id (the first recipient's), accepted, rejected, message_ids? (by recipient, when several)}.
 */
import { z } from 'zod';
import { addressProblem, normalizeAddress, senderDomain } from './address.js';
import { isDbUnavailable, PermanentError, RetryableError } from '../../errors.js';
import type { Db } from '../../db/index.js';
import { groupCommit } from '../../group-commit.js';
import {
  claimDeliveries,
  messageIdFor,
  releaseClaim,
  renewClaims,
  settleDeliveries,
  type Claim,
  type ClaimRequest,
  type Owner,
  type Settlement,
} from './deliveries.js';
import { latestRecommendations, movieLines } from './recommendations.js';
import { DEFAULT_SUBJECT, paragraphs, render, templateData, type Rendered } from './render.js';
import { closeMailer, compose, isPermanentSmtpError, mailerFor, smtpErrorText } from './transport.js';
import { defineJob } from '../registry.js';
import type { JobContext } from '../types.js';

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
type EmailPayload = z.infer<typeof emailPayload>;

interface EmailResult {
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
interface Ledger {
  claim: (r: ClaimRequest) => Promise<Claim>;
  settle: (s: Settlement) => Promise<boolean>;
  sending: ClaimRenewal;
}
const ledgers = new WeakMap<Db, Map<number, Ledger>>();

// A value the database refuses fails its own run only; a lost connection fails the batch (and the DbGuard pauses).
const isolate = (err: unknown) => !isDbUnavailable(err);

type Claimed = Owner & { jobId: string; recipient: string };

/**
 * The claims of this process's sends under way, renewed together every quarter lease: a run's sign of life to a
 * successor that finds them pending. It goes on while the send does, whatever the state of the run's BullMQ lock,
 * because what a successor must know is whether a message may still be going out, not who holds the job.
 */
class ClaimRenewal {
  private readonly live = new Map<string, Claimed>();
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;

  constructor(
    private readonly db: Db,
    private readonly everyMs: number,
    private readonly log: JobContext<unknown>['log'],
  ) {}

  add(c: Claimed) {
    this.live.set(`${c.jobId}\n${c.recipient}`, c);
    this.timer ??= setInterval(() => void this.renew(), this.everyMs).unref();
  }

  delete(c: Claimed) {
    this.live.delete(`${c.jobId}\n${c.recipient}`);
    if (this.live.size || !this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async renew() {
    // A slow renewal is not overtaken by the next one: one in flight at a time.
    if (this.renewing || !this.live.size) return;
    this.renewing = true;
    try {
      await renewClaims(this.db, [...this.live.values()]);
    } catch (err) {
      this.log.warn({ err: String((err as Error)?.message ?? err) }, 'renewing email claims failed');
    } finally {
      this.renewing = false;
    }
  }
}

/**
 * Claims of one process share statements per lease; `leaseMs` is how long a pending claim must have gone without its
 * owner's sign of life before an older owner's claim may be taken over (decideClaim).
 *
 * The lease is the BullMQ lock duration (WORKER_LOCK_MS), the very silence after which BullMQ itself takes a worker
 * for dead and gives its job to another (the lock is renewed every half lock or so, lockRenewTime; a job whose lock key
 * has expired is moved back to wait by the next stalled check, every stalledInterval = WORKER_LOCK_MS). A live owner
 * renews its claims every quarter lease, so a claim is taken over only after three renewals in a row went missing.
 * A run whose lock lapsed while it lives (Redis stalled past the lock, an event loop blocked) keeps renewing the claims
 * of its sends under way: its successor starts once the lock key has expired, finds them held, sends the rest, and
 * leaves these to the owner's outcome (a retry reads them settled). Had the lease been counted from the claim alone,
 * as before, a slow server would have had every claim of a live run taken over while its send was still on the wire.
 * A run that died stops renewing; its successor starts at least about half a lock after the last renewal and takes
 * the claims over once a lease has passed (on its next attempt if need be), sending again with the same Message-ID.
 */
function deliveryLedger(db: Db, leaseMs: number, log: JobContext<unknown>['log']): Ledger {
  let byLease = ledgers.get(db);
  if (!byLease) ledgers.set(db, (byLease = new Map()));
  let l = byLease.get(leaseMs);
  if (!l) {
    const settle = groupCommit((list: Settlement[]) => settleDeliveries(db, list), { maxInFlight: 1, isolate });
    const claim = groupCommit((list: ClaimRequest[]) => claimDeliveries(db, list, leaseMs), {
      maxInFlight: 1,
      isolate,
    });
    l = { claim, settle, sending: new ClaimRenewal(db, leaseMs / 4, log) };
    byLease.set(leaseMs, l);
  }
  return l;
}

/** Waits between attempts to record a send's outcome: about 15 s in all, well inside the job's lock. */
const SETTLE_RETRY_MS = [100, 200, 400, 800, 1_600, 3_200, 4_000, 5_000];

/**
 * Records a send's outcome, trying again while the write fails: a message the server accepted but the ledger does not
 * know of is sent again by the next run (with the same Message-ID, but twice all the same). Gives up, and fails the
 * run, only after SETTLE_RETRY_MS; the claim then stays pending, the ambiguous case the Message-ID is for.
 */
async function settleSurely(
  settle: (s: Settlement) => Promise<boolean>,
  s: Settlement,
  log: JobContext<unknown>['log'],
): Promise<boolean> {
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

/**
 * Distinct recipients in the order given. Addresses are compared case-insensitively as a whole: RFC 5321 lets a server
 * treat local parts case-sensitively, but no mail system in use does, and two copies of one message to `Bob@x.co` and
 * `bob@x.co` (sharing a Message-ID) are the worse outcome. The domain is lowercased; the local part of the first
 * spelling is kept as given, and is what the ledger, the envelope and the result carry.
 */
export function distinctRecipients(to: string | string[]): string[] {
  const byKey = new Map<string, string>();
  for (const a of [to].flat().map(normalizeAddress)) if (!byKey.has(a.toLowerCase())) byKey.set(a.toLowerCase(), a);
  return [...byKey.values()];
}

async function processEmail(ctx: JobContext<EmailPayload>): Promise<EmailResult> {
  const { config, db, log } = ctx.deps;
  const mailer = mailerFor(config, log);
  const recipients = distinctRecipients(ctx.payload.to);
  const domain = senderDomain(config.MAIL_FROM);
  const messageIds = new Map(recipients.map((r) => [r, messageIdFor(ctx.id, r, domain)]));
  const owner: Owner = { gen: ctx.gen, attempt: ctx.attempt };
  const deliveries = deliveryLedger(db, config.WORKER_LOCK_MS, log);

  // Filled from the claims: a recipient already sent or rejected (by this job's earlier runs) is skipped there.
  const state = new Map<string, string>();
  const todo = recipients;
  let lastTemporary: string | undefined;
  let lastPermanent: string | undefined;
  let held = 0;
  let done = 0;
  // The first failure of any send loop; the others stop before their next send, and all are awaited.
  let failure: { err: unknown } | undefined;
  // No new send once the run is cancelled, has lost its BullMQ lock (another worker may be running the job now), or
  // one of its loops failed. A send under way finishes and is recorded.
  const stopped = () => ctx.signal.aborted || ctx.lockLost.aborted || failure !== undefined;
  if (todo.length) {
    // Rendered and composed once; each recipient's copy differs only in its To and Message-ID.
    const message = await compose(config.MAIL_FROM, { ...(await content(ctx)), headers: { 'X-Job-Id': ctx.id } });
    let next = 0;
    const sendNext = async () => {
      while (next < todo.length && !stopped()) {
        const recipient = todo[next++];
        const messageId = messageIds.get(recipient)!;
        const mine: Claimed = { jobId: ctx.id, recipient, ...owner };
        // Claimed just before its send, not at the run's start: a claim is only ever as old as its send.
        const c = await deliveries.claim({ ...mine, messageId });
        if (c.decision === 'settled') {
          state.set(recipient, c.prev_state!);
          continue;
        }
        if (c.decision === 'held') {
          held++;
          continue;
        }
        if (stopped()) {
          await releaseClaim(db, mine);
          return;
        }
        if (c.prev_state === 'pending') {
          log.warn(
            { message_id: messageId, attempts: c.attempts },
            'an earlier send of this message has no recorded outcome; sending it again with the same Message-ID',
          );
        }
        deliveries.sending.add(mine);
        try {
          // Only the send's own failure decides the outcome: a failed write of a 'sent' must never turn it into
          // 'deferred', which the retry would send again.
          let outcome: Settlement['state'];
          let response: string;
          try {
            const d = await mailer.send(message, recipient, messageId);
            outcome = d.accepted.length ? 'sent' : 'rejected';
            response = d.response;
            if (outcome === 'rejected') lastPermanent = response;
          } catch (err) {
            outcome = isPermanentSmtpError(err) ? 'rejected' : 'deferred';
            response = smtpErrorText(err);
            if (outcome === 'rejected') lastPermanent = response;
            else lastTemporary = response;
          }
          const written = await settleSurely(deliveries.settle, { ...mine, state: outcome, response }, log);
          ctx.jobLog(`${recipient}: ${outcome}`, { recipient, outcome, response });
          if (written) state.set(recipient, outcome);
          else
            log.warn(
              { message_id: messageId, outcome },
              "this send's claim was taken over by a newer run; outcome not recorded",
            );
        } finally {
          deliveries.sending.delete(mine);
        }
        done++;
        // In steps of 10%: each step is a ledger write and a published event.
        if (todo.length > 1) await ctx.progress(Math.floor((done * 10) / todo.length) * 10);
      }
    };
    // Promise.all alone would reject at the first failed loop and leave the others sending after the run has ended.
    await Promise.all(
      Array.from({ length: Math.min(SEND_CONCURRENCY, todo.length) }, () =>
        sendNext().catch((err) => {
          failure ??= { err };
        }),
      ),
    );
    if (failure) throw failure.err;
    // The BullMQ limiter counts jobs; a job that sent several messages holds the queue back for the extra ones.
    if (done > 1)
      await ctx.deps.queues.get('email').rateLimit(Math.ceil(((done - 1) * 1000) / config.EMAIL_RATE_PER_SECOND));
  }

  const by = (s: string) => recipients.filter((r) => state.get(r) === s);
  const accepted = by('sent');
  const rejected = by('rejected');
  const unsent = recipients.length - accepted.length - rejected.length;
  if (unsent && !ctx.signal.aborted) {
    const why = ctx.lockLost.aborted
      ? 'this run lost its BullMQ lock'
      : held
        ? `${held} being sent by another run`
        : (lastTemporary ?? 'interrupted');
    throw new RetryableError(
      'smtp_temporary',
      `${unsent} of ${recipients.length} recipient(s) not delivered yet (${why}); will retry`,
    );
  }
  if (!accepted.length && rejected.length) {
    throw new PermanentError(
      'recipients_rejected',
      `the server rejected every recipient${lastPermanent ? `: ${lastPermanent}` : ''}`,
    );
  }
  const ids = recipients.map((r) => [r, messageIds.get(r)!] as const);
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
  // Up to 50 sends, each bounded by the SMTP socket timeout: minutes, not hours.
  timeoutMs: 5 * 60_000,
  maxTimeoutMs: 30 * 60_000,
  limiter: (config) => ({ max: config.EMAIL_RATE_PER_SECOND, duration: 1000 }),
  process: processEmail,
  start: (deps) => void mailerFor(deps.config, deps.log),
  stop: (deps) => closeMailer(deps.config),
});
