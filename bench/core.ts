// The platform's core paths, each beside the bare tool it is built on (issue 10 scenarios 1–4).
import type autocannon from 'autocannon';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { BENCH_CONCURRENCY } from './fixtures/bench-jobs.js';
import {
  cpuSeconds,
  createStack,
  load,
  postgresCpuSeconds,
  procfile,
  redisServerPid,
  ROOT,
  round,
  sleep,
  start,
  type LoadResult,
  type Stack,
} from './lib.js';

const exec = promisify(execFile);
const WEB_READY = /API listening/;
const WORKER_READY = /worker ready/;

export interface Row {
  scenario: string;
  platform: number;
  anchor: number | null;
  unit: string;
  ratio: number | null;
  target: string;
  ok: boolean | null;
  detail: Record<string, number | string>;
}

const row = (
  scenario: string,
  platform: number,
  anchor: number | null,
  unit: string,
  target: string,
  ok: boolean | null,
  detail: Row['detail'] = {},
): Row => ({
  scenario,
  platform: round(platform),
  anchor: anchor === null ? null : round(anchor),
  unit,
  ratio: anchor ? round(platform / anchor, 3) : null,
  target,
  ok,
  detail,
});

const post = (stack: Stack, body: unknown) => ({
  method: 'POST' as const,
  headers: { authorization: `Bearer ${stack.key}`, 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

async function countByState(stack: Stack, type: string) {
  const rows = await stack.db
    .selectFrom('jobs')
    .select(['state', (e) => e.fn.countAll<number>().as('n')])
    .where('type', '=', type)
    .groupBy('state')
    .execute();
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}

/** A load run, with the CPU per request of the serving process: steadier than req/s when other work shares the machine. */
async function cpuPerRequest(pid: number, run: () => Promise<LoadResult>) {
  const cpu0 = cpuSeconds(pid);
  const r = await run();
  return { ...r, cpuUs: round(((cpuSeconds(pid) - cpu0) * 1e6) / Math.max(1, r.total)) };
}

/** Two runs of one side, averaged figure by figure. */
function mean2<T extends Record<string, number>>(x: T, y: T): T {
  return Object.fromEntries(Object.keys(x).map((k) => [k, round((x[k] + y[k]) / 2)])) as T;
}

/** 1. POST /v1/jobs (auth, validation, ledger, enqueue) against a minimal Hono app doing only queue.add. */
export async function enqueue(duration: number): Promise<Row[]> {
  const stack = await createStack('enqueue');
  const web = await start(procfile().web, stack.env, WEB_READY, { port: true });
  const anchor = await start(
    `node --import tsx ${ROOT}/bench/anchors/minimal-enqueue.ts`,
    { ...stack.env, QUEUE_PREFIX: `${stack.env.QUEUE_PREFIX}_anchor` },
    /anchor ready/,
    { port: true },
  );
  try {
    const body = { type: 'noop', payload: { n: 1 } };
    await load({ url: `${web.url}/v1/jobs`, ...post(stack, body), duration: 2 }); // warm-up
    await load({ url: `${anchor.url}/jobs`, ...post(stack, body), duration: 2 });
    // Platform, anchor, anchor, platform: drift in the machine's load during the run favours neither side.
    const platform = () =>
      cpuPerRequest(web.pid, () => load({ url: `${web.url}/v1/jobs`, ...post(stack, body), duration }));
    const bare = () =>
      cpuPerRequest(anchor.pid, () => load({ url: `${anchor.url}/jobs`, ...post(stack, body), duration }));
    const p1 = await platform();
    const a1 = await bare();
    const a2 = await bare();
    const p2 = await platform();
    const p = mean2(p1, p2);
    const a = mean2(a1, a2);
    return [
      row('enqueue req/s', p.rps, a.rps, 'req/s', '≥ 40% of anchor', p.rps >= 0.4 * a.rps, {
        non2xx: p.non2xx,
        errors: p.errors,
        cpu_us_per_req: p.cpuUs,
        anchor_cpu_us_per_req: a.cpuUs,
      }),
      row('enqueue p99', p.p99, a.p99, 'ms', '< 25 ms', p.p99 < 25, { p50: p.p50, anchor_p50: a.p50 }),
    ];
  } finally {
    await Promise.all([web.stop(), anchor.stop()]);
    await stack.close();
  }
}

/** 2. GET /v1/jobs/:id with nothing waiting and with 200,000 jobs waiting in the queue. */
export async function status(duration: number, backlog = 200_000): Promise<Row[]> {
  const stack = await createStack('status');
  const web = await start(procfile().web, stack.env, WEB_READY, { port: true });
  const headers = { authorization: `Bearer ${stack.key}` };
  try {
    const submit = async (n: number) => {
      const ids: string[] = [];
      for (let i = 0; i < n; i += 1000) {
        const res = await fetch(`${web.url}/v1/jobs/bulk`, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json' },
          body: JSON.stringify({
            jobs: Array.from({ length: Math.min(1000, n - i) }, () => ({ type: 'noop', payload: {} })),
          }),
        });
        if (res.status !== 202) throw new Error(`bulk submit: ${res.status} ${await res.text()}`);
        ids.push(...((await res.json()) as { jobs: { id: string }[] }).jobs.map((j) => j.id));
      }
      return ids;
    };
    const ids = await submit(1000);
    let i = 0;
    const target = () => ({
      url: `${web.url}/v1/jobs/${ids[0]}`,
      headers,
      requests: [
        { setupRequest: (req: autocannon.Request) => ({ ...req, path: `/v1/jobs/${ids[i++ % ids.length]}` }) },
      ],
    });
    await load({ ...target(), duration: 2 });
    const empty = await cpuPerRequest(web.pid, () => load({ ...target(), duration }));
    const t0 = performance.now();
    await submit(backlog);
    const fillSeconds = (performance.now() - t0) / 1000;
    // Measure the steady state with a backlog, not PostgreSQL's aftermath of 200k inserts (autovacuum, checkpoint).
    await sql`vacuum analyze jobs`.execute(stack.db);
    await sql`checkpoint`.execute(stack.db);
    const full = await cpuPerRequest(web.pid, () => load({ ...target(), duration }));
    return [
      row(
        'status req/s, 200k waiting vs empty',
        full.rps,
        empty.rps,
        'req/s',
        '≥ 80% of empty',
        full.rps >= 0.8 * empty.rps,
        { backlog, fill_s: round(fillSeconds, 1), cpu_us_per_req: full.cpuUs, empty_cpu_us_per_req: empty.cpuUs },
      ),
      row('status p99, 200k waiting', full.p99, empty.p99, 'ms', '< 10 ms', full.p99 < 10, { p50: full.p50 }),
    ];
  } finally {
    await web.stop();
    await stack.close();
  }
}

/** 3. Trivial jobs through the platform's worker runtime (ledger and events) against a bare BullMQ Worker. */
export async function workerOverhead(jobs = 5000): Promise<Row[]> {
  const stack = await createStack('worker');
  const web = await start(procfile().web, stack.env, WEB_READY, { port: true });
  try {
    for (let i = 0; i < jobs; i += 1000) {
      const res = await fetch(`${web.url}/v1/jobs/bulk`, {
        method: 'POST',
        headers: { authorization: `Bearer ${stack.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          jobs: Array.from({ length: Math.min(1000, jobs - i) }, () => ({ type: 'noop', payload: {} })),
        }),
      });
      if (res.status !== 202) throw new Error(`bulk submit: ${res.status}`);
    }
    await web.stop();
    const t0 = performance.now();
    const worker = await start(procfile().worker, { ...stack.env, QUEUES: 'noop' }, WORKER_READY);
    // CPU per job where it is spent: the worker process, PostgreSQL, Redis (from the worker's readiness on).
    const redisPid = await redisServerPid(stack);
    const cpu0 = { worker: cpuSeconds(worker.pid), pg: postgresCpuSeconds(), redis: cpuSeconds(redisPid) };
    let done = 0;
    while (done < jobs) {
      await sleep(100);
      const c = await countByState(stack, 'noop');
      done = (c.succeeded ?? 0) + (c.failed ?? 0);
    }
    const wall = (performance.now() - t0) / 1000;
    const msPerJob = (s: number) => round((s * 1000) / jobs, 3);
    const cpu = {
      worker_cpu_ms: msPerJob(cpuSeconds(worker.pid) - cpu0.worker),
      pg_cpu_ms: msPerJob(postgresCpuSeconds() - cpu0.pg),
      redis_cpu_ms: msPerJob(cpuSeconds(redisPid) - cpu0.redis),
    };
    // Process start-up (tsx, connections) is not the runtime's cost: time from the first start to the last finish.
    const span = await stack.db
      .selectFrom('jobs')
      .select((e) => [e.fn.min('started_at').as('first'), e.fn.max('finished_at').as('last')])
      .where('type', '=', 'noop')
      .executeTakeFirstOrThrow();
    const seconds = (new Date(span.last as Date).getTime() - new Date(span.first as Date).getTime()) / 1000;
    await worker.stop();
    // The anchors, one after another on the same machine: bare BullMQ (Redis only), and the PostgreSQL-backed peers
    // pg-boss and graphile-worker (durable writes at start and end, as our ledger has), each with its defaults.
    const anchor = async (file: string, env: Record<string, string>) =>
      JSON.parse(
        (
          await exec(process.execPath, ['--import', 'tsx', file], {
            cwd: process.cwd(),
            env: { ...process.env, ...stack.env, JOBS: String(jobs), CONCURRENCY: String(BENCH_CONCURRENCY), ...env },
          })
        ).stdout
          .trim()
          .split('\n')
          .pop()!,
      ) as { jobs_per_s: number; cpu_ms_per_job?: number };
    const bare = await anchor('bench/anchors/bare-worker.ts', { QUEUE_PREFIX: `${stack.env.QUEUE_PREFIX}_anchor` });
    const pgBoss = await anchor('bench/anchors/pgboss-worker.ts', {});
    const graphile = await anchor('bench/anchors/graphile-worker.ts', {});
    const rate = jobs / seconds;
    return [
      row(
        'worker jobs/s vs bare BullMQ',
        rate,
        bare.jobs_per_s,
        'jobs/s',
        '≥ 50% of anchor',
        rate >= 0.5 * bare.jobs_per_s,
        {
          jobs,
          concurrency: BENCH_CONCURRENCY,
          wall_s: round(wall, 1),
          ...cpu,
          anchor_worker_cpu_ms: round(bare.cpu_ms_per_job ?? 0, 3),
        },
      ),
      row(
        'worker jobs/s vs pg-boss 10',
        rate,
        pgBoss.jobs_per_s,
        'jobs/s',
        '≥ 2× (peer)',
        rate >= 2 * pgBoss.jobs_per_s,
        {
          jobs,
          concurrency: BENCH_CONCURRENCY,
        },
      ),
      row(
        'worker jobs/s vs graphile-worker 0.17',
        rate,
        graphile.jobs_per_s,
        'jobs/s',
        '≥ 2× (peer)',
        rate >= 2 * graphile.jobs_per_s,
        { jobs, concurrency: BENCH_CONCURRENCY },
      ),
    ];
  } finally {
    await web.stop();
    await stack.close();
  }
}

/**
 * 4. Submit → succeeded latency of email jobs at a steady 200 jobs/s, to a local SMTP sink in its own process. A few
 * seconds at the same rate warm the processes up first (as the other scenarios do); only the jobs after count.
 */
export async function endToEnd(seconds = 15, rate = 200, warmupSeconds = 3): Promise<Row[]> {
  const sink = await start('node --import tsx test/support/smtp.ts 0', {}, /smtp sink listening \d+/);
  const smtpUrl = `smtp://127.0.0.1:${/smtp sink listening (\d+)/.exec(sink.output())![1]}`;
  const stack = await createStack('e2e', { SMTP_URL: smtpUrl, EMAIL_RATE_PER_SECOND: '100000' });
  const web = await start(procfile().web, stack.env, WEB_READY, { port: true });
  const worker = await start(procfile().worker, stack.env, WORKER_READY);
  try {
    const send = (i: number) =>
      fetch(`${web.url}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${stack.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          type: 'email',
          payload: { to: `user${i}@example.com`, template: 'plain', subject: 'Hi', text: 'Hello' },
        }),
      }).then(async (r) => (r.status === 202 ? ((await r.json()) as { id: string }).id : undefined));
    // A steady `rate` for `secs`; resolves with the ids accepted.
    const steady = async (secs: number, from: number) => {
      const t0 = performance.now();
      const pending: Promise<string | undefined>[] = [];
      for (let i = 0; i < secs * rate; i++) {
        const wait = t0 + (i * 1000) / rate - performance.now();
        if (wait > 1) await sleep(wait);
        pending.push(send(from + i));
      }
      return (await Promise.all(pending)).filter((id): id is string => id !== undefined);
    };
    const finished = async (ids: string[]) => {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const { rows } = await sql<{
          n: number;
        }>`select count(*)::int as n from jobs where id = any(${ids}::uuid[]) and state in ('succeeded', 'failed')`.execute(
          stack.db,
        );
        if (rows[0].n >= ids.length || Date.now() > deadline) return;
        await sleep(200);
      }
    };
    await finished(await steady(warmupSeconds, 0));
    const cpu0 = { web: cpuSeconds(web.pid), worker: cpuSeconds(worker.pid) };
    const ids = await steady(seconds, 1_000_000);
    await finished(ids);
    const cpuMsPerJob = (pid: number, from: number) =>
      round(((cpuSeconds(pid) - from) * 1000) / Math.max(1, ids.length));
    // Where the time goes: submit → started (API, queue, pickup, start write) and started → finished (the email run).
    const q = await sql<{
      p50: number;
      p99: number;
      wait_p50: number;
      wait_p99: number;
      run_p50: number;
      run_p99: number;
      n: number;
      failed: number;
    }>`
      select percentile_cont(0.5) within group (order by extract(epoch from finished_at - created_at)) * 1000 as p50,
             percentile_cont(0.99) within group (order by extract(epoch from finished_at - created_at)) * 1000 as p99,
             percentile_cont(0.5) within group (order by extract(epoch from started_at - created_at)) * 1000 as wait_p50,
             percentile_cont(0.99) within group (order by extract(epoch from started_at - created_at)) * 1000 as wait_p99,
             percentile_cont(0.5) within group (order by extract(epoch from finished_at - started_at)) * 1000 as run_p50,
             percentile_cont(0.99) within group (order by extract(epoch from finished_at - started_at)) * 1000 as run_p99,
             count(*) filter (where state = 'succeeded') as n, count(*) filter (where state = 'failed') as failed
      from jobs where id = any(${ids}::uuid[])`.execute(stack.db);
    const { p50, p99, wait_p50, wait_p99, run_p50, run_p99, n, failed } = q.rows[0];
    return [
      row(`e2e email p99 at ${rate}/s`, p99, null, 'ms', '< 50 ms', p99 < 50, {
        p50: round(p50, 1),
        submit_to_start_p50: round(wait_p50, 1),
        submit_to_start_p99: round(wait_p99, 1),
        start_to_finish_p50: round(run_p50, 1),
        start_to_finish_p99: round(run_p99, 1),
        succeeded: Number(n),
        failed: Number(failed),
        submitted: seconds * rate,
        accepted: ids.length,
        web_cpu_ms_per_job: cpuMsPerJob(web.pid, cpu0.web),
        worker_cpu_ms_per_job: cpuMsPerJob(worker.pid, cpu0.worker),
      }),
    ];
  } finally {
    await Promise.all([web.stop(), worker.stop(), sink.stop()]);
    await stack.close();
  }
}
