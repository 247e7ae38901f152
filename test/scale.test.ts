// Many workers: one API and four worker processes share the queues. Every job runs once, all four take work, and a
// worker stopped with SIGTERM in the middle of a load finishes what it holds and loses nothing.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { startWorkers } from '../src/workers/runtime.js';
import {
  client,
  createTestEnv,
  silentLog,
  startProcess,
  tenantWithKeys,
  waitFor,
  type Proc,
  type TestEnv,
} from './helpers.js';

const WORKERS = 4;
const START = { startTimeoutMs: 90_000 };
let env: TestEnv;
let web: Proc;
const workers: Proc[] = [];
let api: ReturnType<typeof client>;
const markers = mkdtempSync(path.join(os.tmpdir(), 'scale-'));

beforeAll(async () => {
  env = await createTestEnv('scale');
  const t = await tenantWithKeys(env);
  // Only the test queue: the real job types' start-up in four processes would only slow the machine. Two at a time
  // at most, so a loaded 2-core machine starts each within the timeout.
  const [w, first] = await Promise.all([
    startProcess('web', env.env, {}, START),
    startProcess('worker', env.env, { QUEUES: 'test' }, START),
  ]);
  web = w;
  workers.push(first);
  while (workers.length < WORKERS) workers.push(await startProcess('worker', env.env, { QUEUES: 'test' }, START));
  api = client(web.url!, t.clientKey);
}, 300_000);

afterAll(async () => {
  await Promise.all([web, ...workers].map((p) => p?.stop()));
  await env?.close();
});

interface Row {
  id: string;
  state: string;
  attempts: number;
  result: { pid?: number; attempt?: number } | null;
  finished_at: Date | null;
}

async function submit(n: number, payload: Record<string, unknown>): Promise<string[]> {
  const r = await api('POST', '/v1/jobs/bulk', {
    jobs: Array.from({ length: n }, (_, i) => ({ type: 'test', payload: { ...payload, value: i } })),
  });
  expect(r.status).toBe(202);
  return r.body.jobs.map((j: { id: string }) => j.id);
}

const rows = (ids: string[]) =>
  env.db
    .selectFrom('jobs')
    .select(['id', 'state', 'attempts', 'result', 'finished_at'])
    .where('id', 'in', ids)
    .execute() as Promise<Row[]>;

async function allSucceeded(ids: string[], timeout: number): Promise<Row[]> {
  return waitFor(
    async () => {
      const list = await rows(ids);
      const bad = list.filter((r) => r.state === 'failed' || r.state === 'cancelled');
      if (bad.length) throw new Error(`jobs ended ${bad[0].state}: ${bad.map((b) => b.id).join(', ')}`);
      return list.length === ids.length && list.every((r) => r.state === 'succeeded') ? list : undefined;
    },
    { timeout, interval: 200, what: `${ids.length} jobs to succeed` },
  );
}

/** Each job's side effect happened exactly once: one marker line, from attempt 1. */
function expectOnce(dir: string, ids: string[]) {
  expect(readdirSync(dir).sort()).toEqual(ids.map((id) => `${id}.done`).sort());
  for (const id of ids) expect(readFileSync(path.join(dir, `${id}.done`), 'utf8')).toBe('1\n');
}

const byPid = (list: Row[]) => {
  const counts = new Map<number, number>();
  for (const r of list) counts.set(r.result!.pid!, (counts.get(r.result!.pid!) ?? 0) + 1);
  return counts;
};

describe(`one API and ${WORKERS} worker processes`, () => {
  it('runs every job once, spread over all four workers', async () => {
    const dir = mkdtempSync(path.join(markers, 'spread-'));
    const ids = await submit(200, { sleep_ms: 50, marker: dir });
    const done = await allSucceeded(ids, 45_000);
    expectOnce(dir, ids);
    expect(done.every((r) => r.attempts === 1)).toBe(true);
    const counts = byPid(done);
    expect([...counts.keys()].sort()).toEqual(workers.map((w) => w.child.pid).sort());
    // No worker starves: with 5 slots each, each of the four should take a fair share; 10 of 200 is a low bar.
    for (const n of counts.values()) expect(n).toBeGreaterThanOrEqual(10);
  });

  it('loses nothing when one worker is stopped with SIGTERM mid-load: its running jobs finish, the rest run elsewhere', async () => {
    const dir = mkdtempSync(path.join(markers, 'sigterm-'));
    const ids = await submit(160, { sleep_ms: 600, marker: dir });
    // Mid-load: every worker busy, most of the backlog still waiting.
    await waitFor(async () => (await rows(ids)).filter((r) => r.state === 'running').length >= 15, {
      timeout: 20_000,
      what: 'load to build',
    });
    const victim = workers[0];
    const stoppedAt = new Date();
    const code = await victim.stop('SIGTERM');
    expect(code).toBe(0);
    expect(victim.output()).toMatch(/shutting down/);

    const done = await allSucceeded(ids, 50_000);
    expectOnce(dir, ids);
    expect(done.every((r) => r.attempts === 1)).toBe(true);
    const counts = byPid(done);
    // The stopped worker had jobs in hand and finished them during its grace period, after the signal.
    const mine = done.filter((r) => r.result!.pid === victim.child.pid);
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.some((r) => r.finished_at! >= stoppedAt)).toBe(true);
    // The remaining three took the rest of the backlog.
    for (const w of workers.slice(1)) expect(counts.get(w.child.pid!) ?? 0).toBeGreaterThan(mine.length);
  });

  it('takes per-queue concurrency from WORKER_CONCURRENCY, and refuses an unknown queue name at start', async () => {
    const config = loadConfig({ ...env.env, WORKER_CONCURRENCY: 'serial=3,test=12' });
    const running = await startWorkers({ ...env, config, log: silentLog }, ['serial', 'test']);
    try {
      const of = (name: string) => running.workers.find((w) => w.name === name)?.concurrency;
      expect([of('serial'), of('test')]).toEqual([3, 12]);
    } finally {
      await running.close(1_000);
    }
    await expect(startProcess('worker', env.env, { WORKER_CONCURRENCY: 'imgae=4' }, START)).rejects.toThrow(
      /WORKER_CONCURRENCY: unknown queue\(s\) imgae/,
    );
  });
});
