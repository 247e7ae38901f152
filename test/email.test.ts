// Email jobs against a real SMTP server (smtp-server) started here; what arrives is parsed with mailparser.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { addressProblem } from '../src/jobs/email/address.js';
import { claimDeliveries } from '../src/jobs/email/deliveries.js';
import { compose, createMailer, isPermanentSmtpError } from '../src/jobs/email/transport.js';
import { client, createTestEnv, jobInState, tenantWithKeys, type TestEnv, waitFor } from './helpers.js';
import { startSmtp, type TestSmtp } from './support/smtp.js';

const FROM = 'Movie Jobs <noreply@movies.test>';
let env: TestEnv;
let smtp: TestSmtp;
let api: ReturnType<typeof client>;
let tenant: string;

beforeAll(async () => {
  smtp = await startSmtp();
  env = await createTestEnv('email', { testJobs: false, env: { SMTP_URL: smtp.url, MAIL_FROM: FROM } });
  const t = await tenantWithKeys(env);
  tenant = t.tenant;
  api = client(env.app, t.clientKey);
  await env.startWorkers(['email']);
});

afterAll(async () => {
  await env?.close();
  await smtp?.close();
});

const submit = async (payload: Record<string, unknown>) => {
  const r = await api('POST', '/v1/jobs', { type: 'email', payload });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return r.body.id as string;
};

const until = (id: string, states: string[], timeout?: number) => jobInState(api, id, states, timeout);

const arrived = async (messageId: string) => {
  const got = smtp.byMessageId(messageId);
  expect(got, `exactly one message ${messageId}`).toHaveLength(1);
  return { envelope: got[0], mail: await smtp.parse(got[0]) };
};

describe('templates over SMTP', () => {
  it('welcome: headers, text and escaped HTML', async () => {
    const id = await submit({
      to: 'ann@example.com',
      template: 'welcome',
      data: { name: 'Ann <b>&</b> "Co"', app_url: 'https://movies.test/start?a=1&b=2' },
    });
    const job = await until(id, ['succeeded']);
    expect(job.result).toEqual({
      message_id: expect.stringMatching(new RegExp(`^<${id}\\.[0-9a-f]{16}@movies\\.test>$`)),
      accepted: ['ann@example.com'],
      rejected: [],
    });
    const { envelope, mail } = await arrived(job.result.message_id);
    expect(envelope).toMatchObject({ from: 'noreply@movies.test', to: ['ann@example.com'] });
    expect(mail.messageId).toBe(job.result.message_id);
    expect(mail.from?.value).toEqual([{ address: 'noreply@movies.test', name: 'Movie Jobs' }]);
    expect(mail.to).toMatchObject({ value: [{ address: 'ann@example.com' }] });
    expect(mail.subject).toBe('Welcome to Movie Jobs');
    expect(mail.headers.get('x-job-id')).toBe(id);
    expect(mail.text).toContain('Welcome, Ann <b>&</b> "Co"!');
    expect(mail.text).toContain('Get started: https://movies.test/start?a=1&b=2');
    expect(mail.html).toContain('Welcome, Ann &lt;b&gt;&amp;&lt;/b&gt; &quot;Co&quot;!');
    expect(mail.html).toContain('href="https://movies.test/start?a=1&amp;b=2"');
    expect(mail.html).not.toContain('<b>&</b>');
  });

  it('recommendations from the payload: titles and scores in both bodies', async () => {
    const items = [
      { movie_id: 'm1', title: 'Alien <1979>', score: 4.5678 },
      { movie_id: 'm2', title: 'Heat', score: 3.2 },
    ];
    await env.db
      .insertInto('movies')
      .values({ tenant, id: 'm2', title: 'Heat', genres: ['Crime', 'Drama'], year: 1995 })
      .execute();
    const id = await submit({
      to: ['bob@example.com'],
      template: 'recommendations',
      subject: 'Picks for Bob',
      text: 'Fresh picks.',
      data: { name: 'Bob', items },
    });
    const job = await until(id, ['succeeded']);
    const { mail } = await arrived(job.result.message_id);
    expect(mail.subject).toBe('Picks for Bob');
    // Titles, with year and genres where the catalog knows the movie; never the model's scores.
    expect(mail.text).toMatch(
      /Fresh picks\.\n\nBob, here are your picks:\n\n 1\. Alien <1979>\n 2\. Heat \(1995 · Crime, Drama\)\n/,
    );
    expect(mail.html).toContain('<td>Alien &lt;1979&gt;</td><td></td>');
    expect(mail.html).toContain('<td>Heat</td><td>1995 · Crime, Drama</td>');
    expect(`${mail.text}${mail.html}`).not.toMatch(/4\.57|3\.20|Score/);
  });

  it("recommendations read from the user's latest stored result when the payload has none", async () => {
    const exists = (await sql<{ t: string | null }>`select to_regclass('recommendations')::text as t`.execute(env.db))
      .rows[0].t;
    if (exists) {
      const items = [{ movie_id: 'm9', title: 'Stored Pick', score: 0.91 }, { bogus: true }];
      await sql`insert into recommendations (tenant, user_id, items, strategy) values (${tenant}, 'u-42', ${JSON.stringify(items)}::jsonb, 'test')`.execute(
        env.db,
      );
    }
    const id = await submit({ to: 'carol@example.com', template: 'recommendations', data: { user_id: 'u-42' } });
    const job = await until(id, ['succeeded']);
    const { mail } = await arrived(job.result.message_id);
    // Without the recommender's table the email still goes out, saying there is nothing yet.
    if (exists) {
      expect(mail.text).toContain(' 1. Stored Pick\n');
      expect(mail.text).not.toContain('0.91');
    } else expect(mail.text).toContain('no recommendations for you yet');
  });

  it('report_ready links to the file', async () => {
    const id = await submit({
      to: 'dan@example.com',
      template: 'report_ready',
      data: { file_id: 'file_abcdefghijkl', report: 'jobs' },
    });
    const job = await until(id, ['succeeded']);
    const { mail } = await arrived(job.result.message_id);
    expect(mail.subject).toBe('Your report is ready');
    expect(mail.text).toContain(`http://localhost:${env.config.PORT}/v1/files/file_abcdefghijkl`);
    expect(mail.html).toContain(`href="http://localhost:${env.config.PORT}/v1/files/file_abcdefghijkl"`);
  });

  it('plain: subject and text from the payload, HTML escaped paragraph by paragraph', async () => {
    const id = await submit({
      to: 'erin@example.com',
      template: 'plain',
      subject: 'Hello there',
      text: 'First line\nsecond line\n\n<script>alert(1)</script>',
    });
    const job = await until(id, ['succeeded']);
    const { mail } = await arrived(job.result.message_id);
    expect(mail.subject).toBe('Hello there');
    expect(mail.text?.trim()).toBe('First line\nsecond line\n\n<script>alert(1)</script>');
    expect(mail.html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(mail.html).not.toContain('<script>');
  });
});

describe('delivery', () => {
  it('sends one message per recipient; a 5xx recipient is rejected without retries', async () => {
    smtp.rejectRcpt = (a) => a.startsWith('nobody@');
    try {
      const to = ['f1@example.com', 'nobody@example.com', 'F2@Example.COM', 'f1@example.com'];
      const id = await submit({ to, template: 'plain', subject: 'Team news', text: 'News.' });
      const job = await until(id, ['succeeded']);
      expect(job.attempts).toBe(1);
      expect(job.result.accepted).toEqual(['f1@example.com', 'F2@example.com']);
      expect(job.result.rejected).toEqual(['nobody@example.com']);
      const ids = job.result.message_ids as Record<string, string>;
      expect(Object.keys(ids)).toHaveLength(3);
      expect(new Set(Object.values(ids)).size).toBe(3);
      for (const r of job.result.accepted as string[]) {
        const { envelope, mail } = await arrived(ids[r]);
        expect(envelope.to).toEqual([r]);
        expect(mail.to).toMatchObject({ value: [{ address: r }] });
      }
      expect(smtp.byMessageId(ids['nobody@example.com'])).toHaveLength(0);
      const rows = await env.db.selectFrom('email_deliveries').selectAll().where('job_id', '=', id).execute();
      expect(Object.fromEntries(rows.map((r) => [r.recipient, r.state]))).toEqual({
        'f1@example.com': 'sent',
        'F2@example.com': 'sent',
        'nobody@example.com': 'rejected',
      });

      const all = await submit({ to: 'nobody@example.com', template: 'plain', subject: 'x', text: 'x' });
      const failed = await until(all, ['failed']);
      expect(failed).toMatchObject({ attempts: 1, error: { code: 'recipients_rejected' } });
      expect(failed.error.message).toContain('550');
    } finally {
      smtp.rejectRcpt = () => false;
    }
  });

  it('a server answering 421 then recovering gets the message once, on the retry', async () => {
    smtp.tempFailMailFrom = 1;
    const id = await submit({ to: 'grace@example.com', template: 'plain', subject: 'Retry me', text: 'Once.' });
    await until(id, ['delayed', 'running', 'succeeded'], 10_000);
    const job = await until(id, ['succeeded'], 30_000);
    expect(smtp.tempFailMailFrom).toBe(0);
    expect(job.attempts).toBe(2);
    await arrived(job.result.message_id);
    const [row] = await env.db.selectFrom('email_deliveries').selectAll().where('job_id', '=', id).execute();
    expect(row).toMatchObject({ state: 'sent', attempts: 2 });
    // A rerun of the finished job (an operator's retry) sends nothing again.
    const fake = { ...job };
    await env.db.updateTable('jobs').set({ state: 'failed', finished_at: new Date() }).where('id', '=', id).execute();
    expect((await api('POST', `/v1/jobs/${id}/retry`)).status).toBe(202);
    const again = await until(id, ['succeeded']);
    expect(again.result).toEqual(fake.result);
    expect(smtp.byMessageId(job.result.message_id)).toHaveLength(1);
  });
});

describe('issue 17', () => {
  it('Bob@x.co and bob@x.co (item 13): one message, to the first spelling with its domain lowercased', async () => {
    const id = await submit({
      to: ['Bob@X.co', 'bob@x.CO', 'BOB@x.co', 'carol@example.com'],
      template: 'plain',
      subject: 'Case',
      text: 'Once.',
    });
    const job = await until(id, ['succeeded']);
    expect(job.result.accepted).toEqual(['Bob@x.co', 'carol@example.com']);
    expect(Object.keys(job.result.message_ids)).toEqual(['Bob@x.co', 'carol@example.com']);
    const { envelope } = await arrived(job.result.message_ids['Bob@x.co']);
    expect(envelope.to).toEqual(['Bob@x.co']);
    expect(smtp.received.filter((m) => m.to.some((t) => t.toLowerCase() === 'bob@x.co'))).toHaveLength(1);
    const rows = await env.db.selectFrom('email_deliveries').select('recipient').where('job_id', '=', id).execute();
    expect(rows.map((r) => r.recipient).sort()).toEqual(['Bob@x.co', 'carol@example.com']);
  });

  it('a send slower than the lease (item 2) keeps its claim: a newer run finds it held while it is on the wire', async () => {
    // The server holds the message until told; meanwhile the claim outlives the lease (WORKER_LOCK_MS) by the database's
    // clock, and a claim by a newer run of the same job must still leave it to its owner.
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    let arrivedAtServer = false;
    smtp.gate = async () => {
      arrivedAtServer = true;
      await held;
      return true;
    };
    try {
      const id = await submit({ to: 'slow@example.com', template: 'plain', subject: 'Slow', text: 'Once.' });
      await waitFor(() => arrivedAtServer, { what: 'the message to reach the server' });
      const leaseSeconds = env.config.WORKER_LOCK_MS / 1000;
      await waitFor(
        async () =>
          (
            await sql<{ old: boolean }>`select now() - created_at > make_interval(secs => ${leaseSeconds + 0.5}) as old
              from email_deliveries where job_id = ${id} and state = 'pending'`.execute(env.db)
          ).rows[0]?.old,
        { timeout: 30_000, what: 'the claim to outlive the lease' },
      );
      const [newer] = await claimDeliveries(
        env.db,
        [{ jobId: id, recipient: 'slow@example.com', messageId: '<x@y.z>', gen: 0, attempt: 99 }],
        env.config.WORKER_LOCK_MS,
      );
      expect(newer.decision).toBe('held');
      release();
      const job = await until(id, ['succeeded']);
      expect(smtp.byMessageId(job.result.message_id)).toHaveLength(1);
    } finally {
      release();
      smtp.gate = undefined;
    }
  });

  it('a failed send loop (item 2) stops its siblings, and the run ends only after them: no message goes out after its run', async () => {
    // Every progress write of this job fails (from 10% on), so a send loop fails after its first messages. Each message
    // that reaches the server records whether its run had already ended (its failure written to the ledger) by then.
    await sql`create function siblings_fault() returns trigger language plpgsql as $$
      begin raise exception 'injected progress failure'; end $$`.execute(env.db);
    await sql`create trigger siblings_fault before update on jobs for each row
      when (new.progress > 0 and new.payload->>'subject' = 'Siblings') execute function siblings_fault()`.execute(
      env.db,
    );
    const afterRun: string[] = [];
    let jobId = '';
    smtp.gate = async (m) => {
      await new Promise((r) => setTimeout(r, 100));
      if (jobId) {
        const row = await env.db.selectFrom('jobs').select('state').where('id', '=', jobId).executeTakeFirst();
        if (row?.state !== 'running') afterRun.push(m.to[0]);
      }
      return true;
    };
    try {
      const to = Array.from({ length: 30 }, (_, i) => `sib${i}@example.com`);
      jobId = await submit({ to, template: 'plain', subject: 'Siblings', text: 'Once.' });
      const failed = await until(jobId, ['delayed', 'failed'], 30_000);
      expect(failed.error.message).toContain('injected progress failure');
      await sql`drop trigger siblings_fault on jobs`.execute(env.db);
      const job = await until(jobId, ['succeeded'], 60_000);
      expect(afterRun, 'messages that reached the server after their run had ended').toEqual([]);
      expect(job.result.accepted).toEqual(to);
      for (const r of to)
        expect(
          smtp.received.filter((m) => m.to[0] === r),
          r,
        ).toHaveLength(1);
    } finally {
      smtp.gate = undefined;
      await sql`drop trigger if exists siblings_fault on jobs`.execute(env.db);
      await sql`drop function siblings_fault()`.execute(env.db);
    }
  });
});

describe('recording outcomes', () => {
  it('a failed write of a sent outcome is tried again, never recorded as deferred: the message goes out once', async () => {
    // The first two writes of "sent" for this recipient fail, as in a database hiccup (a sequence counts them: it is
    // not rolled back with the failed statement).
    await sql`create sequence settle_fault_seq`.execute(env.db);
    await sql`create function settle_fault() returns trigger language plpgsql as $$
      begin
        if new.recipient = 'hank@example.com' and new.state = 'sent' and nextval('settle_fault_seq') <= 2 then
          raise exception 'injected settle failure';
        end if;
        return new;
      end $$`.execute(env.db);
    await sql`create trigger settle_fault before update on email_deliveries for each row execute function settle_fault()`.execute(
      env.db,
    );
    try {
      const id = await submit({ to: 'hank@example.com', template: 'plain', subject: 'Once only', text: 'Once.' });
      const job = await until(id, ['succeeded'], 30_000);
      expect(job.attempts).toBe(1);
      expect(smtp.byMessageId(job.result.message_id)).toHaveLength(1);
      const [row] = await env.db.selectFrom('email_deliveries').selectAll().where('job_id', '=', id).execute();
      expect(row).toMatchObject({ state: 'sent', attempts: 1 });
      expect(
        Number((await sql<{ n: string }>`select last_value as n from settle_fault_seq`.execute(env.db)).rows[0].n),
      ).toBeGreaterThanOrEqual(3);
    } finally {
      await sql`drop trigger settle_fault on email_deliveries`.execute(env.db);
      await sql`drop function settle_fault()`.execute(env.db);
      await sql`drop sequence settle_fault_seq`.execute(env.db);
    }
  });
});

describe('refused at submission', () => {
  const bad: [string, Record<string, unknown>, string][] = [
    [
      'CR/LF in the subject (header injection)',
      { to: 'a@example.com', template: 'plain', subject: 'Hi\r\nBcc: victim@example.com', text: 'x' },
      'payload.subject',
    ],
    [
      'LF alone in the subject',
      { to: 'a@example.com', template: 'welcome', subject: 'Hi\nX-Evil: 1' },
      'payload.subject',
    ],
    ['a NUL in the subject', { to: 'a@example.com', template: 'welcome', subject: 'Hi\u0000there' }, 'payload.subject'],
    ['CR/LF in an address', { to: 'a@example.com\r\nBcc: victim@example.com', template: 'welcome' }, 'payload.to'],
    ['an address with a display name', { to: 'Bob <bob@example.com>', template: 'welcome' }, 'payload.to'],
    ['several addresses in one string', { to: 'a@example.com, b@example.com', template: 'welcome' }, 'payload.to'],
    [
      'an address without a dot in the domain',
      { to: ['ok@example.com', 'a@localhost'], template: 'welcome' },
      'payload.to.1',
    ],
    [
      '51 recipients',
      { to: Array.from({ length: 51 }, (_, i) => `u${i}@example.com`), template: 'welcome' },
      'payload.to',
    ],
    [
      'a sender of our own choosing (no open relay)',
      { to: 'a@example.com', template: 'welcome', from: 'ceo@bank.test' },
      'payload',
    ],
    ['extra headers', { to: 'a@example.com', template: 'welcome', headers: { Bcc: 'x@example.com' } }, 'payload'],
    ['plain without text', { to: 'a@example.com', template: 'plain', subject: 'x' }, 'payload.text'],
    [
      'report_ready with a javascript: link',
      { to: 'a@example.com', template: 'report_ready', data: { url: 'javascript:alert(1)' } },
      'payload.data.url',
    ],
    [
      'an unknown template variable',
      { to: 'a@example.com', template: 'welcome', data: { nmae: 'typo' } },
      'payload.data',
    ],
    ['an unknown template', { to: 'a@example.com', template: 'newsletter' }, 'payload.template'],
  ];
  it.each(bad)('%s', async (_name, payload, path) => {
    const before = await env.db
      .selectFrom('jobs')
      .select((e) => e.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    const r = await api('POST', '/v1/jobs', { type: 'email', payload });
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toContain('application/problem+json');
    expect(
      r.body.errors.some((e: { path: string }) => e.path.startsWith(path)),
      JSON.stringify(r.body.errors),
    ).toBe(true);
    const after = await env.db
      .selectFrom('jobs')
      .select((e) => e.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(after.n).toBe(before.n);
  });

  it('validates addresses strictly', () => {
    const good = [
      'a@example.com',
      "o'brien+tag@mail.example.co.uk",
      'x_y.z-1@sub.xn--bcher-kva.example',
      'A@EXAMPLE.COM',
    ];
    const wrong = [
      '',
      'a',
      'a@',
      '@example.com',
      'a@@example.com',
      'a@b@example.com',
      '.a@example.com',
      'a.@example.com',
      'a..b@example.com',
      'a b@example.com',
      '"a b"@example.com',
      'a@example',
      'a@-example.com',
      'a@example-.com',
      'a@example.c',
      'a@example.123',
      'a@[127.0.0.1]',
      'a@exa_mple.com',
      'ü@example.com',
      'a@bücher.example',
      `${'x'.repeat(65)}@example.com`,
      `a@${'x'.repeat(250)}.com`,
      'a@example.com\n',
      'a\t@example.com',
    ];
    for (const a of good) expect(addressProblem(a), a).toBeUndefined();
    for (const a of wrong) expect(addressProblem(a), JSON.stringify(a)).toBeTypeOf('string');
  });
});

describe('transport', () => {
  it('treats a refused connection as temporary', async () => {
    const closed = await startSmtp();
    await closed.close();
    const mailer = createMailer(loadConfig({ SMTP_URL: closed.url, MAIL_FROM: FROM }));
    const err = await mailer
      .send(await compose(FROM, { subject: 'x', text: 'x', html: 'x' }), 'i@example.com', '<x@movies.test>')
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    mailer.close();
    expect(err).toMatchObject({ code: expect.stringMatching(/^E/) });
    expect(isPermanentSmtpError(err)).toBe(false);
    expect(isPermanentSmtpError({ responseCode: 421 })).toBe(false);
    expect(isPermanentSmtpError({ responseCode: 550 })).toBe(true);
  });

  it("composes a message once; each recipient's copy has its own To and Message-ID and nothing else differs", async () => {
    const subject = `Ünïcode subject, long enough that a header encoder has to fold it over more than one line: ${'é'.repeat(40)}`;
    const message = await compose('Movie Jobs — Bench <noreply@movies.test>', {
      subject,
      text: 'Body 🎬\n',
      html: '<p>Body 🎬</p>',
      headers: { 'X-Job-Id': 'job-42' },
    });
    expect(message.envelopeFrom).toBe('noreply@movies.test');
    const a = message.for('a@example.com', '<job-42.a@movies.test>');
    const b = message.for("o'brien+x@mail.example.co.uk", '<job-42.b@movies.test>');
    for (const raw of [a, b]) expect(raw.toString('latin1')).not.toMatch(/to\.invalid/);
    const [ma, mb] = await Promise.all([simpleParser(a), simpleParser(b)]);
    expect(ma).toMatchObject({
      subject,
      messageId: '<job-42.a@movies.test>',
      text: 'Body 🎬\n',
      html: '<p>Body 🎬</p>',
    });
    expect(mb).toMatchObject({
      subject,
      messageId: '<job-42.b@movies.test>',
      text: 'Body 🎬\n',
      html: '<p>Body 🎬</p>',
    });
    expect(ma.to).toMatchObject({ value: [{ address: 'a@example.com' }] });
    expect(mb.to).toMatchObject({ value: [{ address: "o'brien+x@mail.example.co.uk" }] });
    expect(ma.from).toMatchObject({ value: [{ address: 'noreply@movies.test', name: 'Movie Jobs — Bench' }] });
    expect(ma.headers.get('x-job-id')).toBe('job-42');
    // Nothing can start a header of its own: the two values go into the header as they are.
    expect(() => message.for('a@example.com\r\nBcc: x@evil.test', '<id@movies.test>')).toThrow(/not a bare address/);
    expect(() => message.for('a@example.com', '<id@movies.test>\nX: y')).toThrow(/not a bare address/);
    // Apart from the two header lines, the copies are byte for byte the same.
    const strip = (raw: Buffer) => raw.toString('latin1').replace(/^(To|Message-ID): .*\r\n/gm, '');
    expect(strip(a)).toBe(strip(b));
  });

  it('writes each message as an .eml file named from its Message-ID; writing again overwrites', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mail-'));
    const mailer = createMailer(loadConfig({ MAIL_DIR: dir, MAIL_FROM: FROM }));
    expect(mailer.kind).toBe('file');
    const message = await compose(FROM, { subject: 'Hi', text: 'Body', html: '<p>Body</p>' });
    const d = await mailer.send(message, 'h@example.com', '<job-1.abc@movies.test>');
    await mailer.send(message, 'h@example.com', '<job-1.abc@movies.test>');
    expect(d.accepted).toEqual(['h@example.com']);
    const files = readdirSync(dir);
    expect(files).toEqual(['job-1.abc_movies.test.eml']);
    const mail = await simpleParser(readFileSync(path.join(dir, files[0])));
    expect(mail).toMatchObject({
      messageId: '<job-1.abc@movies.test>',
      subject: 'Hi',
      text: 'Body',
      html: '<p>Body</p>',
    });
  });
});

describe('rate limit (EMAIL_RATE_PER_SECOND)', () => {
  let slow: TestEnv;
  let slowApi: ReturnType<typeof client>;
  beforeAll(async () => {
    slow = await createTestEnv('email_rate', {
      testJobs: false,
      env: { SMTP_URL: smtp.url, MAIL_FROM: FROM, EMAIL_RATE_PER_SECOND: '5' },
    });
    slowApi = client(slow.app, (await tenantWithKeys(slow)).clientKey);
    await slow.startWorkers(['email']);
  });
  afterAll(async () => {
    await slow?.close();
  });
  const finished = (id: string) =>
    waitFor(
      async () => {
        const r = await slowApi('GET', `/v1/jobs/${id}`);
        return r.body.state === 'succeeded' ? r.body : undefined;
      },
      { what: `job ${id}` },
    );

  it('starts no more jobs per second than configured, and a multi-recipient job holds the queue for its extra messages', async () => {
    const r = await slowApi('POST', '/v1/jobs/bulk', {
      jobs: Array.from({ length: 11 }, (_, i) => ({
        type: 'email',
        payload: { to: `rate${i}@example.com`, template: 'plain', subject: 's', text: 't' },
      })),
    });
    expect(r.status).toBe(202);
    const done = await Promise.all(r.body.jobs.map((j: { id: string }) => finished(j.id)));
    // When BullMQ's limiter let each job start (Redis's clock, stamped by the same script that counts the window):
    // 11 jobs at 5 per window fall into three windows, each opened only after the one before it expired (a few ms
    // of slack: the worker stamps the time just before the script runs).
    const queue = slow.queues.get('email');
    const starts = (await Promise.all(done.map(async (j) => (await queue.getJob(j.id))!.processedOn!))).sort(
      (a, b) => a - b,
    );
    expect(starts[5] - starts[0]).toBeGreaterThanOrEqual(950);
    expect(starts[10] - starts[5]).toBeGreaterThanOrEqual(950);

    const many = await slowApi('POST', '/v1/jobs', {
      type: 'email',
      payload: {
        to: Array.from({ length: 10 }, (_, i) => `bulk${i}@example.com`),
        template: 'plain',
        subject: 's',
        text: 't',
      },
    });
    const first = await finished(many.body.id);
    const next = await slowApi('POST', '/v1/jobs', {
      type: 'email',
      payload: { to: 'after@example.com', template: 'plain', subject: 's', text: 't' },
    });
    const second = await finished(next.body.id);
    // 9 messages beyond the job's own slot, at 5 per second: the queue waits about 1.8 s after the big job.
    expect(Date.parse(second.started_at) - Date.parse(first.finished_at)).toBeGreaterThanOrEqual(1_500);
  });
});
