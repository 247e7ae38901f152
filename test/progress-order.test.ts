// A run's progress writes: one at a time, in order, the latest value winning (src/workers/runtime.ts latestInOrder).
import { describe, expect, it } from 'vitest';
import { latestInOrder } from '../src/workers/runtime.js';

/** A write that ends when the test says so, recording what it wrote and whether two ever overlapped. */
function gatedWrites() {
  const written: number[] = [];
  const gates: (() => void)[] = [];
  let open = 0;
  let overlapped = false;
  const write = async (v: number) => {
    if (++open > 1) overlapped = true;
    written.push(v);
    await new Promise<void>((r) => gates.push(r));
    open--;
  };
  const releaseNext = async () => {
    while (!gates.length) await new Promise((r) => setImmediate(r));
    gates.shift()!();
  };
  return { write, written, releaseNext, overlapped: () => overlapped };
}

describe('latestInOrder', () => {
  it('writes one value at a time, in order, and only the latest of those reported during a write', async () => {
    const g = gatedWrites();
    const { report, settled } = latestInOrder(g.write);
    const first = report(10);
    await new Promise((r) => setImmediate(r)); // 10 is being written
    const during = [report(20), report(30), report(40)];
    await g.releaseNext(); // 10 done; 40 goes next, 20 and 30 never
    await g.releaseNext();
    await Promise.all([first, ...during]);
    await settled();
    expect(g.written).toEqual([10, 40]);
    expect(g.overlapped()).toBe(false);
  });

  it('fails the callers of a failed write only; later values are still written', async () => {
    let fail = true;
    const written: number[] = [];
    const { report, settled } = latestInOrder(async (v) => {
      if (fail) throw new Error('database down');
      written.push(v);
    });
    await expect(report(50)).rejects.toThrow('database down');
    fail = false;
    await report(60);
    await settled();
    expect(written).toEqual([60]);
  });

  it('settled() waits for the write still under way', async () => {
    const g = gatedWrites();
    const { report, settled } = latestInOrder(g.write);
    void report(70);
    let done = false;
    const waiting = settled().then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    await g.releaseNext();
    await waiting;
    expect(g.written).toEqual([70]);
  });
});
