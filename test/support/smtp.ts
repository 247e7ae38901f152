// A real SMTP server for tests and benchmarks (smtp-server), recording what it accepts. Runnable on its own as a
// sink: `node --import tsx test/support/smtp.ts PORT` (prints "smtp sink listening PORT").
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface Received {
  from: string;
  to: string[];
  raw: Buffer;
  messageId: string;
}

export interface TestSmtp {
  port: number;
  url: string;
  received: Received[];
  /** Keep what arrives in `received` (a benchmark sink does not). */
  keep: boolean;
  /** Answer the next N MAIL FROM commands with 421 (service not available). */
  tempFailMailFrom: number;
  /** Recipients answered with 550 at RCPT TO. */
  rejectRcpt: (address: string) => boolean;
  /** Runs before a message is accepted; `false` answers 451 and the message is not recorded. */
  gate?: (r: Received) => Promise<boolean> | boolean;
  parse(r: Received): Promise<ParsedMail>;
  byMessageId(id: string): Received[];
  close(): Promise<void>;
}

const smtpError = (code: number, message: string) => Object.assign(new Error(message), { responseCode: code });

export async function startSmtp(port = 0): Promise<TestSmtp> {
  const state: TestSmtp = {
    port: 0,
    url: '',
    received: [],
    keep: true,
    tempFailMailFrom: 0,
    rejectRcpt: () => false,
    parse: (r) => simpleParser(r.raw),
    byMessageId: (id) => state.received.filter((r) => r.messageId === id),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    closeTimeout: 1_000,
    onMailFrom(_address, _session, callback) {
      if (state.tempFailMailFrom > 0) {
        state.tempFailMailFrom--;
        return callback(smtpError(421, 'Service not available, try again later'));
      }
      callback();
    },
    onRcptTo(address, _session, callback) {
      if (state.rejectRcpt(address.address)) return callback(smtpError(550, `No such user <${address.address}>`));
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks);
        const head = raw.subarray(0, raw.indexOf('\r\n\r\n') + 1 || raw.length).toString('latin1');
        const r: Received = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((a) => a.address),
          raw,
          messageId: /^Message-ID:\s*(<[^>\r\n]+>)/im.exec(head)?.[1] ?? '',
        };
        const accept = () => {
          if (state.keep) state.received.push(r);
          callback(null, 'Queued');
        };
        if (!state.gate) return accept();
        Promise.resolve(state.gate(r)).then(
          (ok) => (ok ? accept() : callback(smtpError(451, 'Local error, try again'))),
          (err: Error) => callback(err),
        );
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  state.port = ((server as unknown as { server: { address(): AddressInfo } }).server.address() as AddressInfo).port;
  state.url = `smtp://127.0.0.1:${state.port}`;
  return state;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const sink = await startSmtp(Number(process.argv[2] ?? 0));
  sink.keep = false;
  process.stdout.write(`smtp sink listening ${sink.port}\n`);
  process.on('SIGTERM', () => void sink.close().then(() => process.exit(0)));
}
