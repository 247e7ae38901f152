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
});
