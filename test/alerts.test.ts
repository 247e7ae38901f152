// Alert rules: promtool's own rule tests (synthetic series, ops/prometheus/alerts.test.yml), the Prometheus config
// checked by promtool, and every metric the rules read is one the platform really exports.
// promtool comes from Debian's `prometheus` package; .ci/run installs it.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, createTestEnv, ROOT, tenantWithKeys, type TestEnv } from './helpers.js';

const DIR = path.join(ROOT, 'ops/prometheus');
const RULES = readFileSync(path.join(DIR, 'alerts.yml'), 'utf8');
const RULE_TESTS = readFileSync(path.join(DIR, 'alerts.test.yml'), 'utf8');

function promtool(...args: string[]) {
  const r = spawnSync('promtool', args, { encoding: 'utf8', cwd: ROOT });
  if (r.error)
    throw new Error(`promtool is needed (apt-get install prometheus, as .ci/run does): ${(r.error as Error).message}`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** Each alert's name and the text of its rule (up to the next one). */
function alerts(): { name: string; text: string }[] {
  return RULES.split(/\n\s*- alert: /)
    .slice(1)
    .map((chunk) => ({ name: chunk.split('\n')[0].trim(), text: chunk }));
}

/** The PromQL of every `expr:`, one-line or a `|` block. */
function expressions(): string[] {
  const lines = RULES.split('\n');
  const out: string[] = [];
  lines.forEach((line, i) => {
    const m = /^(\s*)expr:\s*(.*)$/.exec(line);
    if (!m) return;
    if (m[2] !== '|') return out.push(m[2]);
    const block: string[] = [];
    for (let j = i + 1; j < lines.length && (lines[j].trim() === '' || lines[j].search(/\S/) > m[1].length); j++)
      block.push(lines[j]);
    out.push(block.join('\n'));
  });
  return out;
}

describe('alert rules (promtool)', () => {
  it('pass their rule tests on synthetic series', () => {
    const r = promtool('test', 'rules', path.join(DIR, 'alerts.test.yml'));
    expect(r.output).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  it('each alert has a summary and a runbook line, and is shown firing by at least one rule test', () => {
    const list = alerts();
    expect(list.map((a) => a.name)).toEqual([
      'JobFailureRatioHigh',
      'JobQueueWaitP95High',
      'QueueBacklogGrowing',
      'JobsStalled',
      'ReconcilerRepairing',
      'WebhookDeliveriesFailing',
      'WorkerDown',
      'NoWorkers',
      'LedgerUnavailable',
      'RedisUnavailable',
    ]);
    const firing = new Set(
      RULE_TESTS.split(/\n\s*- eval_time: /)
        .filter((block) => /exp_labels:/.test(block))
        .map((block) => /alertname: (\w+)/.exec(block)?.[1]),
    );
    for (const a of list) {
      expect(a.text, a.name).toMatch(/\n\s+summary: \S/);
      expect(a.text, a.name).toMatch(/\n\s+runbook: (>-\n\s+)?\S/);
      expect(firing.has(a.name), `${a.name} fires in alerts.test.yml`).toBe(true);
    }
  });

  it('the Prometheus config for compose is valid and loads the rules', () => {
    // A copy with a key file, as compose mounts it (the real key is the operator's, git-ignored).
    const dir = mkdtempSync(path.join(tmpdir(), 'prom-'));
    try {
      for (const f of ['prometheus.yml', 'alerts.yml']) copyFileSync(path.join(DIR, f), path.join(dir, f));
      writeFileSync(path.join(dir, 'api-key'), 'key');
      const r = promtool('check', 'config', path.join(dir, 'prometheus.yml'));
      expect(r.output).toMatch(/SUCCESS: 10 rules found/);
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the metrics the alert rules read', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await createTestEnv('alerts');
  });
  afterAll(async () => {
    await env?.close();
  });

  it('are all exported by the platform (the API process registers every one of them)', async () => {
    const used = new Set(
      expressions().flatMap((e) => [...e.matchAll(/([a-z_:][a-z0-9_:]*)\s*[{[]/g)].map((m) => m[1])),
    );
    // `up` is Prometheus's own, per scrape target.
    used.delete('up');
    expect([...used].sort()).toEqual([
      'dependency_up',
      'job_queue_wait_seconds_bucket',
      'jobs_completed_total',
      'jobs_failed_total',
      'jobs_stalled_total',
      'queue_jobs',
      'reconciler_repairs_total',
      'webhook_deliveries_total',
    ]);
    const { operatorKey } = await tenantWithKeys(env);
    const r = await client(env.app, operatorKey)('GET', '/metrics');
    expect(r.status).toBe(200);
    const families = new Set([...(r.body as string).matchAll(/^# TYPE (\S+) (\w+)$/gm)].map((m) => m[1]));
    for (const name of used) expect(families.has(name.replace(/_bucket$/, '')), name).toBe(true);
    // The dependency probes answer for this process's own connections.
    expect(r.body).toContain('dependency_up{dependency="postgres"} 1');
    expect(r.body).toContain('dependency_up{dependency="redis"} 1');
  });
});
