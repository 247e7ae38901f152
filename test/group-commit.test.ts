import { describe, expect, it } from 'vitest';
import { groupCommit } from '../src/group-commit.js';

describe('groupCommit', () => {
  it('writes calls that arrive during a write as one batch, and answers each caller with its own result', async () => {
    const batches: number[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const write = groupCommit(
      async (items: number[]) => {
        batches.push(items);
        if (batches.length === 1) await gate;
        return items.map((n) => n * 10);
      },
      { maxInFlight: 1 },
    );
    const first = write(1);
    const rest = [2, 3, 4, 5].map((n) => write(n));
    release();
    expect(await Promise.all([first, ...rest])).toEqual([10, 20, 30, 40, 50]);
    expect(batches).toEqual([[1], [2, 3, 4, 5]]);
  });

  it('fails every caller of a failed batch, and keeps serving later ones', async () => {
    let fail = true;
    const write = groupCommit(async (items: string[]) => {
      if (fail) throw new Error('database down');
      return items;
    });
    await expect(Promise.all([write('a'), write('b')])).rejects.toThrow('database down');
    fail = false;
    expect(await write('c')).toBe('c');
  });

  it('with isolate, writes a failed batch again item by item, so a bad item fails only its caller', async () => {
    const batches: string[][] = [];
    const write = groupCommit(
      async (items: string[]) => {
        batches.push(items);
        if (items.includes('bad')) throw new Error('rejected value');
        return items.map((s) => s.toUpperCase());
      },
      { maxInFlight: 1, isolate: (err) => (err as Error).message === 'rejected value' },
    );
    const first = write('a');
    const rest = [write('b'), write('bad'), write('c')];
    expect(await first).toBe('A');
    const settled = await Promise.allSettled(rest);
    expect(settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message))).toEqual([
      'B',
      'rejected value',
      'C',
    ]);
    expect(batches).toEqual([['a'], ['b', 'bad', 'c'], ['b'], ['bad'], ['c']]);
  });

  it('caps the batch size', async () => {
    const sizes: number[] = [];
    const write = groupCommit(async (items: number[]) => (sizes.push(items.length), items), {
      maxBatch: 3,
      maxInFlight: 1,
    });
    await Promise.all(Array.from({ length: 10 }, (_, i) => write(i)));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(3);
    expect(sizes.reduce((a, b) => a + b)).toBe(10);
  });

  it("with gather 'turn', callers of one turn share the first write instead of the first going alone", async () => {
    const sizes: number[] = [];
    const write = groupCommit(async (items: number[]) => (sizes.push(items.length), items), { gather: 'turn' });
    await Promise.all(Array.from({ length: 6 }, (_, i) => write(i)));
    expect(sizes).toEqual([6]);
    const eager = groupCommit(async (items: number[]) => (sizes.push(items.length), items));
    sizes.length = 0;
    await Promise.all(Array.from({ length: 6 }, (_, i) => eager(i)));
    expect(sizes[0]).toBe(1);
  });

  /** A write that holds each batch until released, so tests can pile calls up behind it. */
  function heldWrites() {
    const batches: number[][] = [];
    const gates: (() => void)[] = [];
    let failWith: Error | undefined;
    const write = async (items: number[]) => {
      batches.push(items);
      await new Promise<void>((r) => gates.push(r));
      if (failWith) throw failWith;
      return items.map((n) => n * 10);
    };
    return {
      batches,
      write,
      fail: (err: Error) => (failWith = err),
      /** Releases every write held so far. */
      release: () => gates.splice(0).forEach((r) => r()),
    };
  }
  const turn = () => new Promise((r) => setImmediate(r));

  it('fails every caller of a failed batch of several items, writing it once, without isolate', async () => {
    const h = heldWrites();
    const write = groupCommit(h.write, { maxInFlight: 1 });
    const first = write(1);
    const rest = [2, 3, 4].map((n) => write(n));
    h.fail(new Error('database down'));
    h.release();
    await expect(first).rejects.toThrow('database down');
    await turn();
    h.release();
    const settled = await Promise.allSettled(rest);
    expect(settled.map((s) => s.status === 'rejected' && (s.reason as Error).message)).toEqual([
      'database down',
      'database down',
      'database down',
    ]);
    expect(h.batches).toEqual([[1], [2, 3, 4]]);
  });

  it('fails a batch whole when isolate refuses the error (a lost connection), writing each item once', async () => {
    const h = heldWrites();
    const write = groupCommit(h.write, { maxInFlight: 1, isolate: (err) => (err as Error).message === 'bad value' });
    const first = write(1);
    const rest = [2, 3].map((n) => write(n));
    h.fail(new Error('connection lost'));
    h.release();
    await expect(first).rejects.toThrow('connection lost');
    await turn();
    h.release();
    expect((await Promise.allSettled(rest)).map((s) => s.status)).toEqual(['rejected', 'rejected']);
    expect(h.batches).toEqual([[1], [2, 3]]);
  });

  it('writes a failed batch of one item once: isolating it again could not help', async () => {
    let writes = 0;
    const write = groupCommit(
      async (_items: string[]) => {
        writes++;
        throw new Error('bad value');
      },
      { isolate: () => true },
    );
    await expect(write('x')).rejects.toThrow('bad value');
    expect(writes).toBe(1);
  });

  it('keeps at most maxInFlight writes under way (4 by default), gathering the rest into the next batch', async () => {
    const h = heldWrites();
    const write = groupCommit(h.write);
    const calls = [1, 2, 3, 4, 5, 6].map((n) => write(n));
    expect(h.batches).toEqual([[1], [2], [3], [4]]);
    h.release();
    await turn();
    expect(h.batches).toEqual([[1], [2], [3], [4], [5, 6]]);
    h.release();
    expect(await Promise.all(calls)).toEqual([10, 20, 30, 40, 50, 60]);

    const two = heldWrites();
    const narrow = groupCommit(two.write, { maxInFlight: 2 });
    const more = [1, 2, 3, 4].map((n) => narrow(n));
    expect(two.batches).toEqual([[1], [2]]);
    two.release();
    await turn();
    expect(two.batches).toEqual([[1], [2], [3, 4]]);
    two.release();
    expect(await Promise.all(more)).toEqual([10, 20, 30, 40]);
  });

  it('writes at most 500 items per batch by default', async () => {
    const h = heldWrites();
    const write = groupCommit(h.write, { maxInFlight: 1 });
    const calls = Array.from({ length: 1201 }, (_, i) => write(i));
    for (let i = 0; i < 3; i++) {
      h.release();
      await turn();
    }
    h.release();
    await Promise.all(calls);
    expect(h.batches.map((b) => b.length)).toEqual([1, 500, 500, 200]);
    expect(h.batches.flat()).toEqual(Array.from({ length: 1201 }, (_, i) => i));
  });

  it("with gather 'turn', each later round of callers shares a write too, and calls during a full write wait for it", async () => {
    const h = heldWrites();
    const write = groupCommit(h.write, { gather: 'turn', maxInFlight: 1 });
    const round1 = [1, 2, 3].map((n) => write(n));
    expect(h.batches).toEqual([]);
    await turn();
    expect(h.batches).toEqual([[1, 2, 3]]);
    // The one write slot is taken: these wait for it to finish, then go together.
    const round2 = [4, 5].map((n) => write(n));
    await turn();
    expect(h.batches).toEqual([[1, 2, 3]]);
    h.release();
    expect(await Promise.all(round1)).toEqual([10, 20, 30]);
    await turn();
    expect(h.batches).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    h.release();
    expect(await Promise.all(round2)).toEqual([40, 50]);
    // A third round, with the slot free again: gathered for a turn, then one write.
    const round3 = [6, 7, 8].map((n) => write(n));
    expect(h.batches).toHaveLength(2);
    await turn();
    expect(h.batches).toEqual([
      [1, 2, 3],
      [4, 5],
      [6, 7, 8],
    ]);
    h.release();
    expect(await Promise.all(round3)).toEqual([60, 70, 80]);
  });
});
