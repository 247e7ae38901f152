// Where file bytes live. A directory today; an object store would implement the same interface.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface StoredObject {
  key: string;
  bytes: number;
  sha256: string;
}

export interface Storage {
  /**
   * Streams `body` to `key`, atomically: readers see the old object or the whole new one, never a part.
   * `maxBytes` aborts the write (and leaves nothing behind) with a TooLargeError.
   */
  put(key: string, body: Readable | Buffer, opts?: { maxBytes?: number }): Promise<StoredObject>;
  get(key: string): Promise<Readable>;
  /** The object's local path, for libraries that want one (sharp, pdf readers). */
  localPath?(key: string): string;
  delete(key: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** Removes partial writes older than `olderThanMs` (a process killed mid-write leaves one); returns how many. */
  sweepPartial?(olderThanMs: number): Promise<number>;
}

export class TooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`larger than ${limit} bytes`);
  }
}

const SAFE_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$/;

export class DirectoryStorage implements Storage {
  constructor(readonly root: string) {}

  localPath(key: string): string {
    if (!SAFE_KEY.test(key) || key.includes('..')) throw new Error(`unsafe storage key: ${key}`);
    return path.join(this.root, key);
  }

  async put(key: string, body: Readable | Buffer, opts: { maxBytes?: number } = {}): Promise<StoredObject> {
    const target = this.localPath(key);
    await fs.mkdir(path.dirname(target), { recursive: true });
    const tmp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
    const hash = createHash('sha256');
    let bytes = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        if (opts.maxBytes !== undefined && bytes > opts.maxBytes) return done(new TooLargeError(opts.maxBytes));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      const source = Buffer.isBuffer(body) ? [body] : body;
      await pipeline(source as AsyncIterable<Buffer>, meter, createWriteStream(tmp, { flags: 'wx' }));
      await fs.rename(tmp, target);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    return { key, bytes, sha256: hash.digest('hex') };
  }

  async get(key: string): Promise<Readable> {
    const p = this.localPath(key);
    await fs.access(p);
    return createReadStream(p);
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.localPath(key), { force: true });
  }

  async sweepPartial(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    const names = await fs.readdir(this.root, { recursive: true }).catch(() => [] as string[]);
    for (const name of names) {
      if (!/\.[0-9a-f]{12}\.tmp$/.test(name)) continue;
      const p = path.join(this.root, name);
      const stat = await fs.stat(p).catch(() => undefined);
      if (stat?.isFile() && stat.mtimeMs < cutoff) {
        await fs.rm(p, { force: true });
        removed++;
      }
    }
    return removed;
  }

  async exists(key: string): Promise<boolean> {
    return fs.access(this.localPath(key)).then(
      () => true,
      () => false,
    );
  }
}
