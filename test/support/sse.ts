// A raw SSE reader over node:http for tests: independent of src/client so it can check the client's parser too.
import http from 'node:http';

export interface RawEvent {
  event: string;
  id?: string;
  data: any;
}

export interface RawStream {
  status: number;
  headers: http.IncomingHttpHeaders;
  events: RawEvent[];
  comments: string[];
  /** Resolves when the server ends the stream (or the socket closes). */
  ended: Promise<void>;
  /** The client goes away. */
  close(): void;
  /** Resolves once `n` events have arrived. */
  next(n: number, timeoutMs?: number): Promise<RawEvent[]>;
}

export function openStream(
  base: string,
  key: string,
  jobId: string,
  lastEventId?: string,
  agent?: http.Agent,
): Promise<RawStream> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${base}/v1/jobs/${jobId}/events`,
      {
        headers: {
          authorization: `Bearer ${key}`,
          accept: 'text/event-stream',
          ...(lastEventId ? { 'last-event-id': lastEventId } : {}),
        },
        agent: agent ?? false,
      },
      (res) => {
        const events: RawEvent[] = [];
        const comments: string[] = [];
        const waiters: (() => void)[] = [];
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const ev: Partial<RawEvent> & { lines: string[] } = { lines: [] };
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) comments.push(line.slice(1).trim());
              else if (line.startsWith('event: ')) ev.event = line.slice(7);
              else if (line.startsWith('id: ')) ev.id = line.slice(4);
              else if (line.startsWith('data: ')) ev.lines.push(line.slice(6));
            }
            if (ev.event || ev.lines.length) {
              const text = ev.lines.join('\n');
              let data: unknown = text;
              try {
                data = JSON.parse(text);
              } catch {
                /* not JSON */
              }
              events.push({ event: ev.event ?? 'message', id: ev.id, data });
            }
            waiters.splice(0).forEach((w) => w());
          }
        });
        const ended = new Promise<void>((r) => {
          res.on('end', () => r());
          res.on('close', () => r());
          res.on('error', () => r());
        });
        ended.then(() => waiters.splice(0).forEach((w) => w()));
        let closedByServer = false;
        ended.then(() => (closedByServer = true));
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          events,
          comments,
          ended,
          close: () => req.destroy(),
          async next(n, timeoutMs = 15_000) {
            const deadline = Date.now() + timeoutMs;
            while (events.length < n) {
              if (closedByServer) throw new Error(`stream ended after ${events.length} of ${n} events`);
              const left = deadline - Date.now();
              if (left <= 0) throw new Error(`timed out after ${events.length} of ${n} events`);
              await new Promise<void>((r) => {
                const t = setTimeout(r, left);
                waiters.push(() => {
                  clearTimeout(t);
                  r();
                });
              });
            }
            return events.slice(0, n);
          },
        });
      },
    );
    req.on('error', reject);
  });
}
