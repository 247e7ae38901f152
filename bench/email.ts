// Email throughput: N `plain` emails through the platform (HTTP bulk submit → ledger → BullMQ → worker process →
// email ledger → pooled SMTP) against a bare nodemailer loop with the same pool settings, both into one local SMTP
// sink running in its own process. The platform runs twice: N/50 jobs of 50 recipients (how a mailing goes out),
// and N jobs of one recipient each (where the per-job ledger and queue work is paid once per message). The bare loop runs before and after the platform and its mean is the anchor, so
// drift in machine load during the run does not favour either side.
// Target (issue 4): the platform reaches ≥ 70% of the bare rate. Standalone: `node --import tsx bench/email.ts`
// (EMAILS=… to change the count).
import { execFile } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import nodemailer from 'nodemailer';
import { paragraphs, render } from '../src/jobs/email/render.js';
import { email, MAX_RECIPIENTS } from '../src/jobs/email/index.js';
import { cpuSeconds, createStack, procfile, redisServerPid, round, sleep, start, type Proc } from './lib.js';

const exec = promisify(execFile);
const N = Number(process.env.EMAILS ?? 2000);
const WARMUP = 50;
const SUBJECT = 'Benchmark';
const TEXT = 'A short plain message.\n\nSent by the email benchmark.';

const cpuMs = (pid: number) => cpuSeconds(pid) * 1000;

/** Wall-clock rates swing with whatever else the machine runs; CPU per message does much less, so both are reported. */
type Measured = { rate: number; cpuPerMsg: number };

async function bareRate(url: string, n: number, sinkPid: number): Promise<Measured> {
  // As a user writes it: a pooled transport with nodemailer's defaults, not the platform's pool settings.
  const { hostname, port } = new URL(url);
  const transport = nodemailer.createTransport({ pool: true, host: hostname, port: Number(port) });
  const message = render('plain', { subject: SUBJECT, text: TEXT, paragraphs: paragraphs(TEXT) });
  const send = (i: number) =>
    transport.sendMail({
      from: 'Bench <bench@movies.test>',
      to: `user${i}@example.com`,
      ...message,
      messageId: `<bare.${i}.${Date.now()}@movies.test>`,
    });
  await Promise.all(Array.from({ length: WARMUP }, (_, i) => send(i)));
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const sink0 = cpuMs(sinkPid);
  await Promise.all(Array.from({ length: n }, (_, i) => send(i)));
  const seconds = (performance.now() - t0) / 1000;
  const own = process.cpuUsage(cpu0);
  const cpu = (own.user + own.system) / 1000 + cpuMs(sinkPid) - sink0;
  transport.close();
  return { rate: n / seconds, cpuPerMsg: cpu / n };
}

async function submitAll(web: Proc, key: string, emails: number, perJob: number, tag: string) {
  const jobs = Array.from({ length: Math.ceil(emails / perJob) }, (_, j) => ({
    type: 'email',
    payload: {
      to:
        perJob === 1
          ? `${tag}${j}@example.com`
          : Array.from({ length: perJob }, (_, k) => `${tag}${j}.${k}@example.com`),
      template: 'plain',
      subject: SUBJECT,
      text: TEXT,
    },
  }));
  for (let from = 0; from < jobs.length; from += 1000) {
    const res = await fetch(`${web.url}/v1/jobs/bulk`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: jobs.slice(from, from + 1000) }),
    });
    if (res.status !== 202) throw new Error(`bulk submit answered ${res.status}: ${await res.text()}`);
  }
}

export async function run(): Promise<Record<string, number | string | boolean>> {
  const sink = await start('node --import tsx test/support/smtp.ts 0', {}, /smtp sink listening \d+/);
  const url = `smtp://127.0.0.1:${/smtp sink listening (\d+)/.exec(sink.output())![1]}`;
  const stack = await createStack('email', {
    SMTP_URL: url,
    MAIL_FROM: 'Bench <bench@movies.test>',
    EMAIL_RATE_PER_SECOND: '100000',
    QUEUES: 'email',
  });
  const procs: Proc[] = [sink];
  const count = async (q: ReturnType<typeof sql<{ n: number }>>) => Number((await q.execute(stack.db)).rows[0].n);
  const sent = () => count(sql<{ n: number }>`select count(*)::int as n from email_deliveries where state = 'sent'`);
  const failed = () => count(sql<{ n: number }>`select count(*)::int as n from jobs where state = 'failed'`);
  const untilSent = async (n: number) => {
    const deadline = Date.now() + 600_000;
    while ((await sent()) < n) {
      if ((await failed()) > 0) throw new Error('an email job failed during the benchmark');
      if (Date.now() > deadline) throw new Error('the platform did not finish within 10 minutes');
      await sleep(25);
    }
  };
  try {
    const bare1 = await bareRate(url, N, sink.pid);

    const web = await start(procfile().web, stack.env, /API listening/, { port: true });
    const worker = await start(process.env.BENCH_WORKER_CMD ?? procfile().worker, stack.env, /worker ready/);
    procs.push(web, worker);
    let total = WARMUP;
    await submitAll(web, stack.key, WARMUP, 1, 'warm');
    await untilSent(total);
    // Through the platform: from the first submit to the last recipient recorded as sent in the email ledger.
    // CPU: the worker, web and sink processes and this database's PostgreSQL backends, each reported on its own so a
    // message's cost can be split. Redis (shared with nothing else during the run, but not the platform's alone) is
    // reported beside them and left out of the sum.
    const redisPid = await redisServerPid(stack);
    const backends = async () =>
      (
        await sql<{
          pid: number;
        }>`select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`.execute(
          stack.db,
        )
      ).rows.map((r) => r.pid);
    const platformCpu = async () => {
      const pg = (await backends()).reduce((sum, pid) => sum + cpuMs(pid), 0);
      return {
        worker: cpuMs(worker.pid),
        web: cpuMs(web.pid),
        sink: cpuMs(sink.pid),
        pg,
        redis: redisPid ? cpuMs(redisPid) : 0,
      };
    };
    const platformRate = async (perJob: number, tag: string): Promise<Measured & { split: Record<string, number> }> => {
      const t0 = performance.now();
      const cpu0 = await platformCpu();
      await submitAll(web, stack.key, N, perJob, tag);
      total += N;
      await untilSent(total);
      const seconds = (performance.now() - t0) / 1000;
      const cpu1 = await platformCpu();
      const split = Object.fromEntries(
        Object.keys(cpu1).map((k) => [k, (cpu1[k as keyof typeof cpu1] - cpu0[k as keyof typeof cpu0]) / N]),
      );
      return { rate: N / seconds, cpuPerMsg: split.worker + split.web + split.sink + split.pg, split };
    };
    const batched = await platformRate(MAX_RECIPIENTS, 'batch');
    const single = await platformRate(1, 'single');

    const bare2 = await bareRate(url, N, sink.pid);
    // The BullMQ + nodemailer worker a user would write, same message, same worker concurrency, same sink.
    const workerAnchor = JSON.parse(
      (
        await exec(process.execPath, ['--import', 'tsx', 'bench/anchors/bullmq-nodemailer.ts'], {
          cwd: process.cwd(),
          env: {
            ...process.env,
            ...stack.env,
            QUEUE_PREFIX: `${stack.env.QUEUE_PREFIX}_anchor`,
            SMTP_URL: url,
            EMAILS: String(N),
            CONCURRENCY: String(email.concurrency),
            MESSAGE: JSON.stringify(render('plain', { subject: SUBJECT, text: TEXT, paragraphs: paragraphs(TEXT) })),
          },
        })
      ).stdout
        .trim()
        .split('\n')
        .pop()!,
    ) as { msg_per_s: number };
    const anchor = (bare1.rate + bare2.rate) / 2;
    const bareCpu = (bare1.cpuPerMsg + bare2.cpuPerMsg) / 2;
    return {
      emails: N,
      throughput_batched: round(batched.rate, 1),
      throughput_batched_anchor: round(anchor, 1),
      throughput_batched_unit: 'msg/s',
      throughput_batched_target: `≥ 70% of bare nodemailer (${N / MAX_RECIPIENTS} jobs × ${MAX_RECIPIENTS} recipients)`,
      throughput_batched_ok: batched.rate >= 0.7 * anchor,
      throughput_single: round(single.rate, 1),
      throughput_single_anchor: round(anchor, 1),
      throughput_single_unit: 'msg/s',
      throughput_single_target: `≥ 70% of bare nodemailer (${N} jobs × 1 recipient)`,
      throughput_single_ok: single.rate >= 0.7 * anchor,
      throughput_single_vs_worker: round(single.rate, 1),
      throughput_single_vs_worker_anchor: round(workerAnchor.msg_per_s, 1),
      throughput_single_vs_worker_unit: 'msg/s',
      throughput_single_vs_worker_target: `≥ 70% of a BullMQ Worker sending with pooled nodemailer (${N} jobs × 1 recipient)`,
      throughput_single_vs_worker_ok: single.rate >= 0.7 * workerAnchor.msg_per_s,
      bare_before: round(bare1.rate, 1),
      bare_after: round(bare2.rate, 1),
      ratio_batched: round(batched.rate / anchor, 3),
      ratio_single: round(single.rate / anchor, 3),
      cpu_ms_per_msg_bare: round(bareCpu, 2),
      cpu_ms_per_msg_bare_unit: 'ms',
      cpu_ms_per_msg_batched: round(batched.cpuPerMsg, 2),
      cpu_ms_per_msg_batched_unit: 'ms',
      cpu_ms_per_msg_single: round(single.cpuPerMsg, 2),
      cpu_ms_per_msg_single_unit: 'ms',
      ...Object.fromEntries(
        Object.entries(batched.split).map(([k, v]) => [`cpu_ms_per_msg_batched_${k}`, round(v, 2)]),
      ),
      ...Object.fromEntries(Object.entries(single.split).map(([k, v]) => [`cpu_ms_per_msg_single_${k}`, round(v, 2)])),
      cpu_ratio_batched: round(bareCpu / batched.cpuPerMsg, 3),
      cpu_ratio_single: round(bareCpu / single.cpuPerMsg, 3),
    };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await stack.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const figures = await run();
  console.table(figures);
  console.log(JSON.stringify(figures));
  process.exit(0);
}
