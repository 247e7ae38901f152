// A webhook receiver for tests: a real HTTP server whose paths fail, hang or redirect on demand.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  path: string;
  headers: Record<string, string>;
  body: string;
  status: number;
}

export interface Receiver {
  url: string;
  received: Received[];
  /** Answers on `path`: one status per request in turn (the last repeats); 0 = never answer; 'redirect:<url>' = 307. */
  on(path: string, ...plan: (number | string)[]): void;
  close(): Promise<void>;
}

export async function startReceiver(host = '127.0.0.1'): Promise<Receiver> {
  const plans = new Map<string, (number | string)[]>();
  const counts = new Map<string, number>();
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const path = req.url ?? '/';
      const n = counts.get(path) ?? 0;
      counts.set(path, n + 1);
      const plan = plans.get(path) ?? [200];
      const step = plan[Math.min(n, plan.length - 1)];
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
      const status = typeof step === 'string' ? 307 : step;
      received.push({ path, headers, body, status });
      if (step === 0) return; // hang: the sender's timeout must end it
      if (typeof step === 'string') {
        res.writeHead(307, { location: step.replace(/^redirect:/, '') }).end();
        return;
      }
      res.writeHead(step, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    url: `http://${host}:${(server.address() as AddressInfo).port}`,
    received,
    on: (path, ...plan) => plans.set(path, plan),
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
