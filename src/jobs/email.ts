/*
 * email — payload {to, template, subject?, text?, data?}.
 * Side effects: one message per recipient, recorded in `email_deliveries` before it is sent.
 * Result: {message_id, accepted, rejected}.
 */
import { z } from 'zod';
import { defineJob } from './registry.js';

const noCrLf = (s: string) => !/[\r\n]/.test(s);
export const emailAddress = z.string().max(254).email().refine(noCrLf, 'must not contain CR or LF');

export const emailPayload = z.strictObject({
  to: z.union([emailAddress, z.array(emailAddress).min(1).max(50)]),
  template: z.enum(['welcome', 'recommendations', 'report_ready', 'plain']),
  subject: z.string().min(1).max(998).refine(noCrLf, 'must not contain CR or LF').optional(),
  text: z.string().max(100_000).optional(),
  data: z.record(z.string(), z.unknown()).optional(),
});

export const email = defineJob({
  type: 'email',
  description: 'Sends a templated email to up to 50 recipients, each exactly once',
  payload: emailPayload,
  attempts: 5,
  backoffMs: 5_000,
  concurrency: 10,
});
