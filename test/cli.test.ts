// The admin CLI, the config's refusal of bad values, and `npm start` bringing the stack up and down.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import getPort from 'get-port';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, createTestEnv, ROOT, waitFor, type TestEnv } from './helpers.js';

const exec = promisify(execFile);
let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv('cli');
});
afterAll(() => env?.close());

async function cli(args: string[], extra: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await exec(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env.env, ...extra },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('admin CLI', () => {
  it('creates a tenant and keys that work, and revokes them', async () => {
    const t = await cli(['tenants', 'create', 'cli-co']);
    expect(t.code).toBe(0);
    const tenant = JSON.parse(t.stdout);
    expect(tenant).toMatchObject({ tenant: 'cli-co', webhook_secret: expect.stringMatching(/^whsec_/) });

    const k = JSON.parse((await cli(['keys', 'create', '--tenant', 'cli-co', '--role', 'operator'])).stdout);
    expect(k).toMatchObject({ id: expect.any(String), tenant: 'cli-co', role: 'operator', key: expect.any(String) });
    expect((await client(env.app, k.key)('GET', '/v1/jobs')).status).toBe(200);
    // Only the hash is stored.
    const stored = await env.db.selectFrom('api_keys').select('hash').where('id', '=', k.id).executeTakeFirstOrThrow();
    expect(stored.hash).not.toContain(k.key);

    expect((await cli(['keys', 'revoke', k.id])).code).toBe(0);
    const fresh = (await import('../src/api/app.js')).createApp({
      ...env,
      log: (await import('./helpers.js')).silentLog,
    });
    expect((await client(fresh, k.key)('GET', '/v1/jobs')).status).toBe(401);
  });

  it('creates a viewer key that reads every tenant and changes nothing', async () => {
    const r = await cli(['keys', 'create', '--tenant', 'cli-co', '--role', 'viewer']);
    expect(r.code).toBe(0);
    const k = JSON.parse(r.stdout);
    expect(k).toMatchObject({ tenant: 'cli-co', role: 'viewer', key: expect.any(String) });
    const viewer = client(env.app, k.key);
    expect((await viewer('GET', '/v1/queues')).status).toBe(200);
    expect((await viewer('POST', '/v1/jobs', { type: 'test', payload: {} })).status).toBe(403);
  });

  it("sets and shows a tenant's fairness limits, audited; refuses bad values", async () => {
    await cli(['tenants', 'create', 'cli-limits']);
    const set = await cli(['limits', 'set', 'cli-limits', '--type', 'test', '--max-running', '5', '--weight', '2']);
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toEqual({ tenant: 'cli-limits', weight: 2, max_running: { test: 5 } });
    const back = await cli(['limits', 'set', 'cli-limits', '--type', 'test', '--max-running', 'default']);
    expect(JSON.parse(back.stdout)).toEqual({ tenant: 'cli-limits', weight: 2, max_running: {} });
    expect(JSON.parse((await cli(['limits', 'show', 'cli-limits'])).stdout)).toMatchObject({ weight: 2 });
    const audit = await env.db.selectFrom('audit_log').selectAll().where('target', '=', 'cli-limits').execute();
    expect(audit.map((a) => [a.action, a.surface])).toEqual([
      ['tenant.limits', 'cli'],
      ['tenant.limits', 'cli'],
    ]);
    for (const args of [
      ['limits', 'set', 'cli-limits', '--weight', '0'],
      ['limits', 'set', 'cli-limits', '--type', 'test', '--max-running', '-1'],
      ['limits', 'set', 'cli-limits', '--type', 'nosuchtype', '--max-running', '1'],
      ['limits', 'set', 'cli-limits', '--max-running', '1'],
      ['limits', 'set', 'nobody', '--weight', '1'],
      ['limits', 'show', 'nobody'],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.length).toBeGreaterThan(0);
    }
    expect(JSON.parse((await cli(['limits', 'show', 'cli-limits'])).stdout)).toMatchObject({
      weight: 2,
      max_running: {},
    });
  }, 120_000);

  it('explains bad usage with a non-zero exit', async () => {
    for (const args of [
      [],
      ['tenants', 'create'],
      ['tenants', 'create', 'Bad Name!'],
      ['keys', 'create', '--tenant', 'cli-co', '--role', 'root'],
      ['keys', 'create', '--tenant', 'nobody', '--role', 'client'],
      ['keys', 'revoke', 'key_missing'],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.length).toBeGreaterThan(0);
    }
    const dup = await cli(['tenants', 'create', 'cli-co']);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/already exists/);
  }, 120_000);
});

describe('configuration', () => {
  it.each([
    ['PORT', 'eighty'],
    ['MAX_UPLOAD_BYTES', '-5'],
    ['DATABASE_URL', 'mysql://x'],
    ['LOG_LEVEL', 'loud'],
    ['QUEUES', 'email,nope'],
    ['WEBHOOK_ALLOW_PRIVATE', 'maybe'],
    ['TENANT_WEIGHT', '0'],
  ])(
    'stops at start with a message naming %s',
    async (name, value) => {
      const entry = name === 'QUEUES' ? 'src/workers/main.ts' : 'src/api/server.ts';
      const r = await exec(process.execPath, ['--import', 'tsx', entry], {
        cwd: ROOT,
        env: { ...process.env, ...env.env, [name]: value },
        timeout: 50_000,
      }).catch((e) => e);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(name);
    },
    60_000,
  );
});

describe('npm start', () => {
  it('migrates, runs web and worker, and stops them all on Ctrl-C', { timeout: 120_000 }, async () => {
    const port = await getPort();
    const dbUrl = env.config.DATABASE_URL.replace(/\/([^/]+)$/, '/$1_stack');
    const child = spawn('npm', ['start'], {
      cwd: ROOT,
      env: { ...process.env, ...env.env, DATABASE_URL: dbUrl, PORT: String(port), JOB_MODULES: '', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, {
        timeout: 90_000,
        what: `the stack to answer; it said:\n${out}`,
      }).catch((e) => {
        throw new Error(`${e.message}\n${out}`);
      });
      await waitFor(() => /worker ready/.test(out), { timeout: 30_000, what: 'the worker' });
      expect(out).toContain(`http://localhost:${port}/docs`);
      // Ctrl-C reaches the whole foreground process group, as in a terminal.
      process.kill(-child.pid!, 'SIGINT');
      await new Promise((r) => child.on('exit', r));
      // Every process of the stack is gone (signal 0 to the group fails once none is left), and the port is closed.
      const groupAlive = () => {
        try {
          process.kill(-child.pid!, 0);
          return true;
        } catch {
          return false;
        }
      };
      await waitFor(() => !groupAlive(), { timeout: 30_000, what: 'every stack process to exit' });
      await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
      const { dropDatabase } = await import('./helpers.js');
      await dropDatabase(dbUrl);
    }
  });
});
