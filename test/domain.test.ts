// The domain terms are defined once (src/domain.ts); the ledger's SQL keeps literal copies where a list is part of a
// statement's text (the CHECK on jobs.state, the partial indexes on live jobs). These tie the copies to the terms.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOB_STATES, LIVE, TERMINAL, WAITING } from '../src/domain.js';
import { unitDb, unitDbName, type UnitDb } from './support/unit-db.js';

/** The quoted words of a constraint or index definition, in order. */
const quoted = (def: string) => [...def.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]);

describe('domain terms', () => {
  it('live and terminal states split the states between them, in the order of JOB_STATES', () => {
    expect([...LIVE, ...TERMINAL]).toEqual([...JOB_STATES]);
    expect(LIVE.filter((s) => TERMINAL.includes(s))).toEqual([]);
  });

  describe('the ledger', () => {
    let u: UnitDb;
    beforeAll(async () => {
      u = await unitDb(unitDbName('domain'), ['domain']);
    });
    afterAll(async () => {
      await u?.close();
    });

    it("refuses no state of JOB_STATES and accepts no other (jobs.state's CHECK)", async () => {
      const { rows } = await sql<{ def: string }>`
        select pg_get_constraintdef(c.oid) as def from pg_constraint c
        where c.conrelid = 'jobs'::regclass and c.contype = 'c' and pg_get_constraintdef(c.oid) like '%state%'
      `.execute(u.db);
      expect(rows).toHaveLength(1);
      expect(quoted(rows[0].def)).toEqual([...JOB_STATES]);
    });

    it('indexes jobs under exactly the LIVE or WAITING states (partial indexes the queries must match)', async () => {
      const { rows } = await sql<{ name: string; def: string }>`
        select indexname as name, indexdef as def from pg_indexes
        where tablename = 'jobs' and indexdef ~ 'WHERE .*state'
      `.execute(u.db);
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows) {
        const states = quoted(r.def.replace(/^.* WHERE /, ''));
        expect({ name: r.name, states }).toEqual({
          name: r.name,
          states: states.length === WAITING.length ? [...WAITING] : [...LIVE],
        });
      }
    });
  });
});
