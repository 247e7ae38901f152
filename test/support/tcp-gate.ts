// A TCP relay in front of a real server (Redis, PostgreSQL) whose client→server direction can be held: what a client
// sends while the gate is held waits in the relay until it is released, answers flow freely. It puts a chosen process
// step exactly between two others (a worker's ledger write and its BullMQ call), with real servers on both sides.
import net from 'node:net';

export interface TcpGate {
  port: number;
  /** From now on, bytes clients send are kept back. */
  hold(): void;
  /** Sends what was kept back, in order, and lets traffic through again. */
  release(): void;
  /** Resolves once the bytes kept back (since the last hold) contain `text`. */
  waitForHeld(text: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function tcpGate(target: { host: string; port: number }): Promise<TcpGate> {
  let held = false;
  let heldText = '';
  const waiting: { text: string; resolve: () => void }[] = [];
  const queued: { upstream: net.Socket; chunk: Buffer }[] = [];
  const sockets = new Set<net.Socket>();
  const check = () => {
    for (const w of [...waiting])
      if (heldText.includes(w.text)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve();
      }
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    client.on('data', (chunk) => {
      if (held) {
        queued.push({ upstream, chunk });
        heldText += chunk.toString('latin1');
        check();
      } else upstream.write(chunk);
    });
    upstream.on('data', (chunk) => client.write(chunk));
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    hold() {
      held = true;
      heldText = '';
    },
    release() {
      held = false;
      for (const { upstream, chunk } of queued.splice(0)) if (!upstream.destroyed) upstream.write(chunk);
    },
    waitForHeld(text, timeoutMs = 20_000) {
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`nothing held contained ${JSON.stringify(text)}`)), timeoutMs);
        waiting.push({
          text,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
        check();
      });
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
