// Where mail goes: a pooled SMTP transport when SMTP_URL is set, else .eml files under MAIL_DIR (the local stack needs
// no mail server). One mailer per process, created by the first email job's worker and logged once.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { Logger } from 'pino';
import type { Config } from '../config.js';

export interface OutgoingMessage {
  to: string;
  subject: string;
  text: string;
  html: string;
  messageId: string;
  headers?: Record<string, string>;
}

export interface Delivery {
  accepted: string[];
  rejected: string[];
  response: string;
}

export interface Mailer {
  readonly kind: 'smtp' | 'file';
  send(message: OutgoingMessage, signal?: AbortSignal): Promise<Delivery>;
  close(): void;
}

/** Shared by the worker and the benchmark's bare loop, so both use the very same pool settings. */
export function smtpPoolOptions(url: string) {
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
    async send(m, signal) {
      const info = await transport.sendMail({ from: config.MAIL_FROM, ...m, disableFileAccess: true, disableUrlAccess: true, ...(signal ? { signal } : {}) });
      return { accepted: info.accepted.map(String), rejected: info.rejected.map(String), response: info.response };
    },
    close: () => transport.close(),
  };
}

/** The message file's name comes from its Message-ID, so writing it again overwrites rather than duplicates. */
export function emlName(messageId: string): string {
  return `${messageId.replace(/^<|>$/g, '').replace(/[^A-Za-z0-9._-]/g, '_')}.eml`;
}

function fileMailer(config: Config): Mailer {
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' });
  const dir = path.resolve(config.MAIL_DIR);
  return {
    kind: 'file',
    async send(m) {
      const info = await transport.sendMail({ from: config.MAIL_FROM, ...m, disableFileAccess: true, disableUrlAccess: true });
      await fs.mkdir(dir, { recursive: true });
      const target = path.join(dir, emlName(m.messageId));
      const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
      await fs.writeFile(tmp, info.message as Buffer);
      await fs.rename(tmp, target);
      return { accepted: [m.to], rejected: [], response: `written to ${target}` };
    },
    close() {},
  };
}

export function createMailer(config: Config): Mailer {
  return config.SMTP_URL ? smtpMailer(config, config.SMTP_URL) : fileMailer(config);
}

/** The transport in words, for the startup log; the URL's password is never printed. */
export function describeMailer(config: Config): Record<string, unknown> {
  if (!config.SMTP_URL) return { transport: 'file', dir: path.resolve(config.MAIL_DIR) };
  const u = new URL(config.SMTP_URL);
  return { transport: 'smtp', host: u.hostname, port: Number(u.port) || (u.protocol === 'smtps:' ? 465 : 587), secure: u.protocol === 'smtps:', user: u.username ? decodeURIComponent(u.username) : undefined, pool: 5 };
}

const mailers = new WeakMap<Config, Mailer>();

/** The process's mailer for this config, created (and logged) on first use. */
export function mailerFor(config: Config, log: Logger): Mailer {
  let m = mailers.get(config);
  if (!m) {
    m = createMailer(config);
    mailers.set(config, m);
    log.info({ mail: describeMailer(config) }, config.SMTP_URL ? 'email transport: SMTP (pooled)' : 'email transport: .eml files (SMTP_URL is not set)');
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
