// Where mail goes: a pooled SMTP transport when SMTP_URL is set, else .eml files under MAIL_DIR (the local stack needs
// no mail server). One mailer per process, created by the first email job's worker and logged once.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import nodemailer from 'nodemailer';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import { withSpan } from '../../tracing/index.js';

/** What a job's recipients all get alike: one composition serves every recipient of the job. */
export interface MessageContent {
  subject: string;
  text: string;
  html: string;
  headers?: Record<string, string>;
}

/** A message composed once (MIME headers and both bodies), then written out per recipient. */
export interface ComposedMessage {
  /** MAIL_FROM's address, the envelope sender. */
  readonly envelopeFrom: string;
  /** The whole message for one recipient: the composition with its own To and Message-ID. */
  for(to: string, messageId: string): Buffer;
}

// Stand-ins composed in place of the recipient and the Message-ID, then replaced per recipient. Recipients are bare
// ASCII addresses (address.ts) and Message-IDs are ASCII, so neither needs encoding or folding in the header.
const TO_SLOT = 'recipient@to.invalid';
const ID_SLOT = '<message-id@to.invalid>';
const HEADER_TOKEN = /^[\x21-\x7e]{1,998}$/;

/**
 * Composes a message once with nodemailer's MailComposer; each recipient's copy differs only in its To and Message-ID
 * header lines. Composing (MIME tree, boundaries, encodings, headers) is most of what nodemailer spends on a message,
 * so a job with 50 recipients pays it once instead of 50 times.
 */
export async function compose(from: string, content: MessageContent): Promise<ComposedMessage> {
  const node = new MailComposer({
    from,
    to: TO_SLOT,
    messageId: ID_SLOT,
    ...content,
    disableFileAccess: true,
    disableUrlAccess: true,
  }).compile();
  const envelopeFrom = (node.getEnvelope() as { from: string | false }).from;
  if (!envelopeFrom) throw new Error(`MAIL_FROM has no address: ${from}`);
  const whole = await node.build();
  const split = whole.indexOf('\r\n\r\n');
  const lines = whole.subarray(0, split).toString('latin1').split('\r\n');
  const body = whole.subarray(split);
  // Whole header lines: a subject (one line, no CR/LF) can never equal one of these.
  const toAt = lines.indexOf(`To: ${TO_SLOT}`);
  const idAt = lines.indexOf(`Message-ID: ${ID_SLOT}`);
  if (toAt < 0 || idAt < 0) throw new Error('composed headers lack the To or Message-ID line');
  return {
    envelopeFrom,
    for(to, messageId) {
      // Written into the header as they are, past nodemailer's encoding: printable ASCII without spaces only.
      if (!HEADER_TOKEN.test(to) || !HEADER_TOKEN.test(messageId))
        throw new Error(`not a bare address and Message-ID: ${JSON.stringify([to, messageId])}`);
      const copy = lines.slice();
      copy[toAt] = `To: ${to}`;
      copy[idAt] = `Message-ID: ${messageId}`;
      return Buffer.concat([Buffer.from(copy.join('\r\n'), 'latin1'), body]);
    },
  };
}

interface Delivery {
  accepted: string[];
  rejected: string[];
  response: string;
}

export interface Mailer {
  readonly kind: 'smtp' | 'file';
  /** Sends one recipient's copy of a composed message. */
  send(message: ComposedMessage, to: string, messageId: string): Promise<Delivery>;
  close(): void;
}

/** Shared by the worker and the benchmark's bare loop, so both use the very same pool settings. */
function smtpPoolOptions(url: string) {
  return {
    url,
    pool: true as const,
    maxConnections: 5,
    maxMessages: 1000,
    // Never resend a message on another connection behind our back: after a dropped connection the server may already
    // have it. The email ledger decides what is resent, and a resend keeps its Message-ID.
    maxRequeues: 0,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 60_000,
    disableFileAccess: true,
    disableUrlAccess: true,
  };
}

function smtpMailer(config: Config, url: string): Mailer {
  const transport = nodemailer.createTransport(smtpPoolOptions(url));
  return {
    kind: 'smtp',
    send: (m, to, messageId) =>
      // One span per recipient's SMTP transaction; the address stays out of the trace.
      withSpan('smtp send', { 'server.address': new URL(url).hostname }, async () => {
        const info = await transport.sendMail({
          envelope: { from: m.envelopeFrom, to: [to] },
          raw: m.for(to, messageId),
        });
        return { accepted: info.accepted.map(String), rejected: info.rejected.map(String), response: info.response };
      }),
    close: () => transport.close(),
  };
}

/** The message file's name comes from its Message-ID, so writing it again overwrites rather than duplicates. */
function emlName(messageId: string): string {
  return `${messageId.replace(/^<|>$/g, '').replace(/[^A-Za-z0-9._-]/g, '_')}.eml`;
}

function fileMailer(config: Config): Mailer {
  const dir = path.resolve(config.MAIL_DIR);
  return {
    kind: 'file',
    async send(m, to, messageId) {
      await fs.mkdir(dir, { recursive: true });
      const target = path.join(dir, emlName(messageId));
      const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
      await fs.writeFile(tmp, m.for(to, messageId));
      await fs.rename(tmp, target);
      return { accepted: [to], rejected: [], response: `written to ${target}` };
    },
    close() {},
  };
}

export function createMailer(config: Config): Mailer {
  return config.SMTP_URL ? smtpMailer(config, config.SMTP_URL) : fileMailer(config);
}

/** The transport in words, for the startup log; the URL's password is never printed. */
function describeMailer(config: Config): Record<string, unknown> {
  if (!config.SMTP_URL) return { transport: 'file', dir: path.resolve(config.MAIL_DIR) };
  const u = new URL(config.SMTP_URL);
  return {
    transport: 'smtp',
    host: u.hostname,
    port: Number(u.port) || (u.protocol === 'smtps:' ? 465 : 587),
    secure: u.protocol === 'smtps:',
    user: u.username ? decodeURIComponent(u.username) : undefined,
    pool: 5,
  };
}

const mailers = new WeakMap<Config, Mailer>();

/** The process's mailer for this config, created (and logged) on first use. */
export function mailerFor(config: Config, log: Logger): Mailer {
  let m = mailers.get(config);
  if (!m) {
    m = createMailer(config);
    mailers.set(config, m);
    log.info(
      { mail: describeMailer(config) },
      config.SMTP_URL ? 'email transport: SMTP (pooled)' : 'email transport: .eml files (SMTP_URL is not set)',
    );
  }
  return m;
}

export function closeMailer(config: Config): void {
  mailers.get(config)?.close();
  mailers.delete(config);
}

/**
 * SMTP failures that a retry cannot fix: a 5xx reply, or an envelope nodemailer refuses itself. Everything else
 * (4xx, refused or dropped connections, timeouts) is temporary.
 */
export function isPermanentSmtpError(err: unknown): boolean {
  const e = err as { responseCode?: number; code?: string } | null;
  if (typeof e?.responseCode === 'number') return e.responseCode >= 500 && e.responseCode < 600;
  return e?.code === 'EENVELOPE';
}

export function smtpErrorText(err: unknown): string {
  const e = err as { response?: string; message?: string; code?: string } | null;
  return String(e?.response ?? e?.message ?? err).slice(0, 500);
}
