// A private redis-server on a free port, for tests that wipe, stop or restart Redis.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import getPort from 'get-port';
import { Redis } from 'ioredis';

export interface PrivateRedis {
  port: number;
  url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  flushall(): Promise<void>;
}

/** `args` are extra redis-server options, e.g. `['--enable-debug-command', 'yes']` for `DEBUG SLEEP`. */
export async function privateRedis(args: string[] = []): Promise<PrivateRedis> {
  const port = await getPort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redis-'));
  let proc: ChildProcess | undefined;
  const ping = async () => {
    const r = new Redis({
      port,
      host: '127.0.0.1',
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    r.on('error', () => {});
    try {
      await r.connect();
      return (await r.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      r.disconnect();
    }
  };
  const self: PrivateRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      proc = spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...args],
        { stdio: 'ignore' },
      );
      for (let i = 0; i < 100 && !(await ping()); i++) await new Promise((r) => setTimeout(r, 50));
      if (!(await ping())) throw new Error('private redis-server did not start');
    },
    async stop() {
      if (!proc || proc.exitCode !== null) return;
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    },
    async flushall() {
      const r = new Redis(self.url);
      await r.flushall();
      r.disconnect();
    },
  };
  await self.start();
  process.once('exit', () => {
    proc?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  return self;
}
