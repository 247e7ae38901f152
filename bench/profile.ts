// CPU profile of a Procfile process under one benchmark load: `npm run bench:profile -- enqueue|status|worker|email`.
// Prints where self time goes (by function and by package) and leaves the .cpuprofile for Chrome DevTools.
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createStack, load, procfile, ROOT, sleep, start, type Proc } from './lib.js';

const scenario = process.argv[2] ?? 'enqueue';
const dir = path.join(ROOT, 'bench/results/profiles', `${scenario}-${Date.now().toString(36)}`);
mkdirSync(dir, { recursive: true });
const profiled = (cmd: string) => cmd.replace(/^node /, `node --cpu-prof --cpu-prof-dir=${dir} `);

// email: 4,000 `plain` emails, one recipient per job (bench/email.ts's costliest case; PER_JOB=50 for a mailing), into
// the benchmark's SMTP sink process.
const sink: Proc | undefined =
  scenario === 'email'
    ? await start('node --import tsx test/support/smtp.ts 0', {}, /smtp sink listening \d+/)
    : undefined;
const smtp: Record<string, string> = sink
  ? {
      SMTP_URL: `smtp://127.0.0.1:${/smtp sink listening (\d+)/.exec(sink.output())![1]}`,
      MAIL_FROM: 'Bench <bench@movies.test>',
      EMAIL_RATE_PER_SECOND: '100000',
    }
  : {};
const stack = await createStack(`prof_${scenario}`, smtp);
const auth = { authorization: `Bearer ${stack.key}` };
const noop = () => ({ type: 'noop', payload: {} });
const bulk = async (url: string, n: number, job: (i: number) => unknown = noop) => {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 1000) {
    const res = await fetch(`${url}/v1/jobs/bulk`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: Array.from({ length: Math.min(1000, n - i) }, (_, k) => job(i + k)) }),
    });
    ids.push(...((await res.json()) as { jobs: { id: string }[] }).jobs.map((j) => j.id));
  }
  return ids;
};
try {
  if (scenario === 'worker' || scenario === 'email') {
    // PER_JOB=50: the mailing case, 50 recipients per job.
    const perJob = Number(process.env.PER_JOB ?? 1);
    const n = scenario === 'worker' ? 10_000 : 4_000 / perJob;
    const to = (i: number) =>
      perJob === 1 ? `user${i}@example.com` : Array.from({ length: perJob }, (_, k) => `user${i}.${k}@example.com`);
    const email = (i: number) => ({
      type: 'email',
      payload: { to: to(i), template: 'plain', subject: 'Benchmark', text: 'A short plain message.' },
    });
    const web = await start(procfile().web, stack.env, /API listening/, { port: true });
    await bulk(web.url!, n, scenario === 'worker' ? noop : email);
    await web.stop();
    const worker = await start(
      profiled(procfile().worker),
      { ...stack.env, QUEUES: scenario === 'worker' ? 'noop' : 'email' },
      /worker ready/,
    );
    for (;;) {
      const { n: done } = await stack.db
        .selectFrom('jobs')
        .select((e) => e.fn.countAll<number>().as('n'))
        .where('state', '=', 'succeeded')
        .executeTakeFirstOrThrow();
      if (Number(done) >= n) break;
      await sleep(100);
    }
    await worker.stop();
  } else {
    const web = await start(profiled(procfile().web), stack.env, /API listening/, { port: true });
    if (scenario === 'status') {
      const ids = await bulk(web.url!, 1000);
      let i = 0;
      const r = await load({
        url: `${web.url}/v1/jobs/${ids[0]}`,
        headers: auth,
        duration: 10,
        requests: [{ setupRequest: (req) => ({ ...req, path: `/v1/jobs/${ids[i++ % ids.length]}` }) }],
      });
      console.log(r);
    } else {
      const r = await load({
        url: `${web.url}/v1/jobs`,
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'noop', payload: { n: 1 } }),
        duration: 10,
      });
      console.log(r);
    }
    await web.stop();
  }
} finally {
  await stack.close();
  await sink?.stop();
}

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
if (!file) throw new Error(`no profile written in ${dir}`);
const prof = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
};
const self = new Map<number, number>();
prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
const byFn = new Map<string, number>();
const byPkg = new Map<string, number>();
let total = 0;
for (const n of prof.nodes) {
  const t = self.get(n.id) ?? 0;
  if (!t) continue;
  const { functionName, url, lineNumber } = n.callFrame;
  if (functionName === '(idle)') continue;
  total += t;
  const where = url.replace(/^file:\/\//, '').replace(`${ROOT}/`, '');
  byFn.set(
    `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}`,
    (byFn.get(`${functionName || '(anonymous)'} ${where}:${lineNumber + 1}`) ?? 0) + t,
  );
  const pkg =
    /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(where)?.[1] ??
    (where.startsWith('src/') ? 'src' : where.startsWith('node:') ? 'node' : where || functionName);
  byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + t);
}
const top = (m: Map<string, number>, n: number) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, v]) => `${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`)
    .join('\n');
console.log(
  `busy ${(total / 1e6).toFixed(1)} s of CPU in ${path.join(dir, file)}\n\nby package:\n${top(byPkg, 15)}\n\nby function:\n${top(byFn, 30)}`,
);
