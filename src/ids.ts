// Ledger ids: UUIDv7 (RFC 9562), time-ordered and monotonic within a millisecond, as the `uuid` package makes them,
// but drawing their random bits from a pooled buffer: uuid's own rng calls webcrypto getRandomValues once per id,
// a visible share of the API's CPU per submitted job (docs/performance.md, "Figures behind the code").
import { randomFillSync } from 'node:crypto';
import { v7 } from 'uuid';

const POOL = 16 * 256;
const pool = new Uint8Array(POOL);
let offset = POOL;
let msecs = -Infinity;
let seq = 0;

export function newId(): string {
  if (offset + 16 > POOL) {
    randomFillSync(pool);
    offset = 0;
  }
  const random = pool.subarray(offset, (offset += 16));
  const now = Date.now();
  if (now > msecs) {
    msecs = now;
    seq = ((random[6] & 0x7f) << 24) | (random[7] << 16) | (random[8] << 8) | random[9];
  } else {
    seq = (seq + 1) | 0;
    if (seq === 0) msecs++;
  }
  return v7({ msecs, seq, random });
}
