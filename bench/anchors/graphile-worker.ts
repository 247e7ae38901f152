// Peer anchor for the worker-overhead scenario: graphile-worker 0.17 as its README writes it (`run` with a task
// list, default polling and LISTEN/NOTIFY), N jobs, the same concurrency as the platform. Durable PostgreSQL
// writes at each job's fetch and completion (a completed job is deleted). Times the start of the runner to the
// last job gone from its table. Prints one JSON line.
import { makeWorkerUtils, run } from 'graphile-worker';
import pg from 'pg';

const n = Number(process.env.JOBS ?? 5000);
const concurrency = Number(process.env.CONCURRENCY ?? 32);
const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/jobs';

const utils = await makeWorkerUtils({ connectionString: url });
await utils.migrate();
for (let i = 0; i < n; i += 1000) {
  await utils.addJobs(
    Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({ identifier: 'noop', payload: { n: i + k } })),
  );
}
const probe = new pg.Client({ connectionString: url });
await probe.connect();
const left = async () => Number((await probe.query(`select count(*)::int as c from graphile_worker.jobs`)).rows[0].c);

const start = performance.now();
const runner = await run({
  connectionString: url,
  concurrency,
  noHandleSignals: true,
  taskList: { noop: async () => {} },
});
while ((await left()) > 0) await new Promise((r) => setTimeout(r, 50));
const seconds = (performance.now() - start) / 1000;
await runner.stop();
await utils.release();
await probe.end();
console.log(JSON.stringify({ jobs: n, seconds, jobs_per_s: n / seconds }));
process.exit(0);
