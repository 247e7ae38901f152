// A private 3-master Redis Cluster from the Debian redis-server binary, on free local ports, for cluster tests.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import getPort from 'get-port';
import { Redis } from 'ioredis';

const run = promisify(execFile);

export interface RedisClusterHandle {
  ports: number[];
  /** REDIS_URL for the platform: every node, comma-separated. */
  url: string;
  /** The node (port) that serves a key's slot. */
  nodeFor(key: string): Promise<number>;
  /** How many keys matching a SCAN pattern one node holds. */
  countKeys(port: number, match: string): Promise<number>;
  stop(): Promise<void>;
}

async function clusterOk(port: number): Promise<boolean> {
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
    const info = await r.cluster('INFO');
    return /cluster_state:ok/.test(info) && /cluster_slots_assigned:16384/.test(info);
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts `masters` redis-server processes in cluster mode, joins them with redis-cli, waits until every slot is served. */
export async function startRedisCluster(masters = 3): Promise<RedisClusterHandle> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redis-cluster-'));
  const procs: ChildProcess[] = [];
  const ports: number[] = [];
  const taken: number[] = [];
  const errors: string[] = [];
  const killAll = () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  };
  process.once('exit', () => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
  });

  try {
    for (let i = 0; i < masters; i++) {
      // The cluster bus needs its own port; by default it is port + 10000, which may be taken, so pick it too.
      const port = await getPort({ exclude: taken });
      const busPort = await getPort({ exclude: [...taken, port] });
      taken.push(port, busPort);
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--cluster-port',
          String(busPort),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${port}.conf`,
          '--cluster-node-timeout',
          '5000',
          '--save',
          '',
          '--appendonly',
          'no',
          '--maxmemory-policy',
          'noeviction',
          '--dir',
          dir,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      child.on('error', (e) => errors.push(String(e)));
      child.stderr!.on('data', (d) => errors.push(String(d)));
      child.stdout!.resume();
      procs.push(child);
      ports.push(port);
    }
    // Wait until each node answers.
    for (const port of ports) {
      for (let i = 0; ; i++) {
        const r = new Redis({
          port,
          host: '127.0.0.1',
          lazyConnect: true,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
        });
        r.on('error', () => {});
        const up = await r
          .connect()
          .then(() => r.ping())
          .then(
            () => true,
            () => false,
          );
        r.disconnect();
        if (up) break;
        if (i > 100) throw new Error(`redis-server on ${port} did not start: ${errors.join('')}`);
        await pause(50);
      }
    }
    await run(
      'redis-cli',
      ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: 30_000 },
    );
    for (let i = 0; ; i++) {
      const states = await Promise.all(ports.map(clusterOk));
      if (states.every(Boolean)) break;
      if (i > 200) throw new Error('Redis Cluster did not reach cluster_state:ok');
      await pause(50);
    }
  } catch (err) {
    killAll();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    ports,
    url: ports.map((p) => `redis://127.0.0.1:${p}`).join(','),
    async nodeFor(key: string) {
      const r = new Redis({ port: ports[0], host: '127.0.0.1' });
      try {
        const slot = Number(await r.cluster('KEYSLOT', key));
        const ranges = await r.cluster('SLOTS');
        const hit = ranges.find(([from, to]) => slot >= from && slot <= to);
        if (!hit?.[2]) throw new Error(`no node serves slot ${slot}`);
        return hit[2][1];
      } finally {
        r.disconnect();
      }
    },
    async countKeys(port: number, match: string) {
      const r = new Redis({ port, host: '127.0.0.1' });
      try {
        let n = 0;
        let cursor = '0';
        do {
          const [next, found] = await r.scan(cursor, 'MATCH', match, 'COUNT', 1000);
          cursor = next;
          n += found.length;
        } while (cursor !== '0');
        return n;
      } finally {
        r.disconnect();
      }
    },
    async stop() {
      await Promise.all(
        procs.map(
          (p) =>
            new Promise<void>((resolve) => {
              if (p.exitCode !== null || p.signalCode !== null) return resolve();
              p.once('exit', () => resolve());
              p.kill('SIGKILL');
            }),
        ),
      );
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
