// Peer anchor for the worker-overhead scenario: pg-boss 10 with its defaults, N jobs, the same concurrency as the
// platform. pg-boss 10's `work()` waits its polling interval (2 s) after every fetch, so a throughput-minded user
// writes the documented fetch/complete loop instead: fetch up to `concurrency` jobs, run them at once, complete
// them in one call, fetch again at once while there is work. Durable PostgreSQL writes at each job's start (fetch)
// and end (complete), like our ledger. Times the first fetch to the last completion. Prints one JSON line.
import PgBoss from 'pg-boss';
import pg from 'pg';

const n = Number(process.env.JOBS ?? 5000);
const concurrency = Number(process.env.CONCURRENCY ?? 32);
const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/jobs';

const boss = new PgBoss(url);
boss.on('error', (err) => console.error(err));
await boss.start();
await boss.createQueue('noop');
for (let i = 0; i < n; i += 1000) {
  await boss.insert(Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({ name: 'noop', data: { n: i + k } })));
}
const probe = new pg.Client({ connectionString: url });
await probe.connect();
const completed = async () =>
  Number(
    (await probe.query(`select count(*)::int as c from pgboss.job where name = 'noop' and state = 'completed'`)).rows[0]
      .c,
  );

const handler = async (_job: PgBoss.Job<unknown>) => ({ ok: true });
const start = performance.now();
let done = 0;
while (done < n) {
  const jobs = await boss.fetch<unknown>('noop', { batchSize: concurrency });
  if (!jobs.length) {
    await new Promise((r) => setTimeout(r, 50));
    continue;
  }
  await Promise.all(jobs.map(handler));
  await boss.complete(
    'noop',
    jobs.map((j) => j.id),
  );
  done += jobs.length;
}
if ((await completed()) !== n) throw new Error('pg-boss: not every job completed');
const seconds = (performance.now() - start) / 1000;
await probe.end();
await boss.stop({ graceful: false, wait: true });
console.log(JSON.stringify({ jobs: n, seconds, jobs_per_s: n / seconds }));
process.exit(0);
