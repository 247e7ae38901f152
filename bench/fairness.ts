// Fairness (issue 19): tenant A submits FAIRNESS_JOBS (5,000) email jobs to a slow SMTP server (~50 ms per message),
// then tenant B submits 20. Reported: B's queue wait (started − created, from the ledger) p95, and the total
// throughput (all jobs, first created to last finished), with admission on and, as the anchor, off (every job enters
// BullMQ at submit, as before fairness). Targets: B's p95 under 2 s with fairness on; throughput within 10% of off.
// Standalone: `node --import tsx bench/fairness.ts` (FAIRNESS_JOBS=… to change A's count, FAIRNESS_ORDER=on,off to
// run fairness on first).
import { pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { createKey, createTenant } from '../src/auth/keys.js';
import { startSmtp } from '../test/support/smtp.js';
import { createStack, procfile, round, sleep, start, type Proc } from './lib.js';

const N = Number(process.env.FAIRNESS_JOBS ?? 5000);
const B_JOBS = 20;
const SMTP_DELAY_MS = 50;

const job = (to: string) => ({
  type: 'email',
  payload: { to, template: 'plain', subject: 'Fairness', text: 'A short plain message.' },
});

async function submit(url: string, key: string, jobs: unknown[]) {
  for (let from = 0; from < jobs.length; from += 1000) {
    const res = await fetch(`${url}/v1/jobs/bulk`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: jobs.slice(from, from + 1000) }),
    });
    if (res.status !== 202) throw new Error(`bulk submit answered ${res.status}: ${await res.text()}`);
  }
}

const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.95) - 1)];

async function once(admission: 'on' | 'off', smtpUrl: string) {
  const stack = await createStack(`fairness_${admission}`, {
    SMTP_URL: smtpUrl,
    MAIL_FROM: 'Bench <bench@movies.test>',
    EMAIL_RATE_PER_SECOND: '100000',
    QUEUES: 'email',
    ADMISSION: admission,
  });
  const procs: Proc[] = [];
  try {
    await createTenant(stack.db, 'bench-b');
    const bKey = (await createKey(stack.db, stack.config.API_KEY_SECRET, 'bench-b', 'client')).key;
    const web = await start(procfile().web, stack.env, /API listening/, { port: true });
    procs.push(web);
    procs.push(await start(process.env.BENCH_WORKER_CMD ?? procfile().worker, stack.env, /worker ready/));
    await submit(
      web.url!,
      stack.key,
      Array.from({ length: N }, (_, i) => job(`a${i}@example.com`)),
    );
    await submit(
      web.url!,
      bKey,
      Array.from({ length: B_JOBS }, (_, i) => job(`b${i}@example.com`)),
    );
    const deadline = Date.now() + 900_000;
    for (;;) {
      const { rows } = await sql<{ live: number; failed: number }>`
        select count(*) filter (where state in ('queued', 'delayed', 'running'))::int as live,
          count(*) filter (where state = 'failed')::int as failed from jobs`.execute(stack.db);
      if (rows[0].failed > 0) throw new Error('an email job failed during the benchmark');
      if (rows[0].live === 0) break;
      if (Date.now() > deadline) throw new Error('the jobs did not finish within 15 minutes');
      await sleep(100);
    }
    const { rows: waits } = await sql<{ ms: number }>`
      select extract(epoch from started_at - created_at) * 1000 as ms from jobs where tenant = 'bench-b'`.execute(
      stack.db,
    );
    const { rows: span } = await sql<{ s: number; n: number }>`
      select extract(epoch from max(finished_at) - min(created_at)) as s, count(*)::int as n from jobs`.execute(
      stack.db,
    );
    return { bP95: p95(waits.map((w) => Number(w.ms))), rate: span[0].n / Number(span[0].s) };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await stack.close();
  }
}

export async function run(): Promise<Record<string, number | string | boolean>> {
  const smtp = await startSmtp(0);
  smtp.keep = false;
  smtp.gate = () => sleep(SMTP_DELAY_MS).then(() => true);
  try {
    // Off first by default; FAIRNESS_ORDER=on,off runs the other way round, to see the machine's drift.
    const order = (process.env.FAIRNESS_ORDER ?? 'off,on').split(',') as ('on' | 'off')[];
    const runs: Partial<Record<'on' | 'off', Awaited<ReturnType<typeof once>>>> = {};
    for (const mode of order) runs[mode] = await once(mode, smtp.url);
    const { on, off } = runs as Record<'on' | 'off', Awaited<ReturnType<typeof once>>>;
    return {
      a_jobs: N,
      b_wait_p95: round(on.bP95 / 1000, 2),
      b_wait_p95_anchor: round(off.bP95 / 1000, 2),
      b_wait_p95_unit: 's',
      b_wait_p95_target: `< 2 s with fairness on (anchor: off), A ${N} jobs then B ${B_JOBS}`,
      b_wait_p95_ok: on.bP95 < 2000,
      throughput: round(on.rate, 1),
      throughput_anchor: round(off.rate, 1),
      throughput_unit: 'jobs/s',
      throughput_target: '≥ 90% of the same run with fairness off',
      throughput_ok: on.rate >= 0.9 * off.rate,
    };
  } finally {
    await smtp.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const figures = await run();
  console.table(figures);
  console.log(JSON.stringify(figures));
  process.exit(0);
}
