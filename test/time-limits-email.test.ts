// Time limits with email's claims (issue 19): an email run whose sends hang past its time limit and grace period is
// abandoned. Its send loops stop at its aborted signal (no new recipient is claimed or sent by it), the sends already
// on the wire still record their real outcome under their claim's owner, and the next attempt, a newer generation,
// sends the rest: every recipient gets exactly one message. A real SMTP server and the in-process runtime.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { deliveriesOf } from '../src/jobs/email/deliveries.js';
import { client, createTestEnv, jobInState, sleep, tenantWithKeys, type TestEnv } from './helpers.js';
import { startSmtp, type TestSmtp } from './support/smtp.js';

let env: TestEnv;
let smtp: TestSmtp;
let api: ReturnType<typeof client>;

beforeAll(async () => {
  smtp = await startSmtp();
  env = await createTestEnv('time_limits_email', {
    testJobs: false,
    env: {
      SMTP_URL: smtp.url,
      MAIL_FROM: 'Movie Jobs <noreply@movies.test>',
      JOB_TIMEOUT_GRACE_MS: '300',
    },
  });
  api = client(env.app, (await tenantWithKeys(env)).clientKey);
  await env.startWorkers(['email']);
});

afterAll(async () => {
  await env?.close();
  await smtp?.close();
});

it('an email run abandoned past its time limit sends nothing new; the next generation sends the rest, each recipient once', {
  timeout: 120_000,
}, async () => {
  const to = Array.from({ length: 10 }, (_, i) => `r${i}@example.com`);
  // The first five messages (one per send loop of the first run) take far longer than the time limit and its grace.
  const slow = new Set(to.slice(0, 5));
  smtp.gate = async (m) => {
    if (slow.has(m.to[0])) await sleep(2_500);
    return true;
  };
  const r = await api('POST', '/v1/jobs', {
    type: 'email',
    payload: { to, template: 'plain', subject: 's', text: 't' },
    timeout_ms: 800,
  });
  expect(r.status).toBe(202);
  const { generation: gen0 } = await env.db
    .selectFrom('jobs')
    .select('generation')
    .where('id', '=', r.body.id)
    .executeTakeFirstOrThrow();

  const done = await jobInState(api, r.body.id, ['succeeded', 'failed'], 90_000);
  expect(done).toMatchObject({ state: 'succeeded', error: null });
  expect(done.attempts).toBeGreaterThanOrEqual(2);
  expect([...done.result.accepted].sort()).toEqual([...to].sort());

  // One message per recipient.
  const copies = new Map<string, number>();
  for (const m of smtp.received) for (const rcpt of m.to) copies.set(rcpt, (copies.get(rcpt) ?? 0) + 1);
  expect([...copies.keys()].sort()).toEqual([...to].sort());
  expect([...copies.values()].every((n) => n === 1)).toBe(true);

  // The slow five were sent, and recorded, by the abandoned first run; the rest by a later generation: the abandoned
  // run started no send after its signal was aborted.
  const owners = new Map((await deliveriesOf(env.db, r.body.id)).map((d) => [d.recipient, d]));
  for (const rcpt of to.slice(0, 5))
    expect(owners.get(rcpt), rcpt).toMatchObject({ state: 'sent', owner_gen: gen0, owner_attempt: 1 });
  for (const rcpt of to.slice(5)) {
    expect(owners.get(rcpt)?.state, rcpt).toBe('sent');
    expect(owners.get(rcpt)!.owner_gen, rcpt).toBeGreaterThan(gen0);
  }
});
