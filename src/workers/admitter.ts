// The admitter: hands ledger jobs waiting for their tenant's window to BullMQ as windows free (src/db/admission.ts).
// One process at a time does it, the holder of a session-level PostgreSQL advisory lock on a connection of its own: a
// process that dies (even by SIGKILL) loses the lock with its connection, and another worker process takes over at its
// next try (every ten intervals). Two admitters at once would still be safe (the window rows serialise admission); the lock only saves work.
//
// Each pass reads every (tenant, type) with jobs ready and waiting, shares the pass's budget among the tenants of a
// type by deficit round-robin on their weights (`planAdmission`), admits each share in its own short transaction,
// then adds what it admitted to BullMQ. A crash between that commit and the add leaves admitted jobs missing from
// Redis: the reconciler enqueues them.
import type { Services } from '../services.js';
import pg from 'pg';
import {
  type AdmittedRow,
  admissionPolicy,
  admit,
  candidates,
  type Candidate,
  refreshBounds,
} from '../db/admission.js';
import { enqueue } from '../jobs/enqueue.js';

/** The advisory lock key of the admitter's leadership (per database). */
const LEADER_LOCK = 7_236_837_461_200_001n;
/** Jobs one pass admits per type at most, so a pass stays short however large the backlog. */
const PASS_BUDGET = 1_000;
/**
 * How often the leader sets the windows' bounds back to their true counts, so a quiet tenant's submits keep finding
 * room in the statement itself (a bound is otherwise refreshed only when its tenant has jobs waiting).
 */
const REFRESH_MS = 1_000;
/** The pause after a pass that admitted jobs. */
const BUSY_PAUSE_MS = 5;
/** How often a process that is not the leader tries to become it. */
const STANDBY_FACTOR = 10;

/** One (tenant, type) share of a pass. */
export interface Share {
  tenant: string;
  type: string;
  window: number;
  weight: number;
  n: number;
}

/**
 * How many of a tenant's waiting jobs its window takes now: none until a quarter of the window is free (or everything
 * waiting fits), then all the room. Jobs still queued in BullMQ keep the workers busy meanwhile, and a pass then
 * admits in hundreds rather than in ones: a pass per few finished jobs made the admitter cost more CPU per job (in
 * PostgreSQL and in the worker) than the job's own ledger writes (docs/performance.md).
 */
export function refill(g: Pick<Candidate, 'waiting' | 'live' | 'window'>): number {
  const room = Math.max(0, g.window - g.live);
  const want = Math.min(g.waiting, room);
  return want >= Math.min(g.waiting, Math.ceil(g.window / 4)) ? want : 0;
}

/**
 * Deficit round-robin over the tenants of each type: each round, a tenant with room in its window and jobs waiting
 * earns its weight in credit and takes as many whole jobs as its credit buys; until the budget is spent or no tenant
 * can take more. `deficits` (by `tenant/type`) carries fractional credit from pass to pass; a tenant that has nothing
 * left to take loses its credit, as in DRR. Shares come back in the order of the first round that gave them jobs.
 */
export function planAdmission(groups: readonly Candidate[], budget: number, deficits: Map<string, number>): Share[] {
  const out: Share[] = [];
  const byType = new Map<string, Candidate[]>();
  for (const g of groups) byType.set(g.type, [...(byType.get(g.type) ?? []), g]);
  for (const [type, list] of byType) {
    const want = new Map(list.map((g) => [g.tenant, refill(g)]));
    const shares = new Map<string, Share>();
    let left = budget;
    let active = list.filter((g) => want.get(g.tenant)! > 0);
    for (const g of list) if (!active.includes(g)) deficits.delete(`${g.tenant}/${type}`);
    while (left > 0 && active.length > 0) {
      for (const g of active) {
        const key = `${g.tenant}/${type}`;
        const credit = (deficits.get(key) ?? 0) + g.weight;
        const take = Math.min(Math.floor(credit), want.get(g.tenant)!, left);
        deficits.set(key, credit - take);
        if (take > 0) {
          want.set(g.tenant, want.get(g.tenant)! - take);
          left -= take;
          let s = shares.get(g.tenant);
          if (!s) {
            s = { tenant: g.tenant, type, window: g.window, weight: g.weight, n: 0 };
            shares.set(g.tenant, s);
            out.push(s);
          }
          s.n += take;
        }
        if (left === 0) break;
      }
      const done = active.filter((g) => want.get(g.tenant) === 0);
      for (const g of done) deficits.delete(`${g.tenant}/${type}`);
      active = active.filter((g) => want.get(g.tenant)! > 0);
    }
  }
  return out;
}

/** One pass: what it admitted (and handed to BullMQ). */
export async function admitOnce(
  deps: Pick<Services, 'config' | 'db' | 'queues' | 'log' | 'registry'>,
  deficits: Map<string, number> = new Map(),
): Promise<AdmittedRow[]> {
  const { registry } = deps;
  const policy = admissionPolicy(deps.config);
  // With admission off every job is admitted at submit; what still waits (left from a time it was on) goes now.
  const found = (await candidates(deps.db, policy, PASS_BUDGET))
    .filter((c) => registry.get(c.type))
    .map((c) => (policy.on ? c : { ...c, window: 1_000_000_000 }));
  if (found.length === 0) return [];
  const admitted: AdmittedRow[] = [];
  for (const share of planAdmission(found, PASS_BUDGET, deficits)) {
    admitted.push(...(await admit(deps.db, share, share.n)));
  }
  if (admitted.length) {
    try {
      await enqueue(deps.queues, registry, admitted);
    } catch (err) {
      deps.log.error(
        { err, jobs: admitted.length },
        'enqueue of admitted jobs failed; the reconciler will enqueue them',
      );
    }
  }
  return admitted;
}

/** Runs passes every ADMISSION_INTERVAL_MS while this process holds the leadership; tries to take it otherwise. */
export function startAdmitter(deps: Pick<Services, 'config' | 'db' | 'queues' | 'log' | 'registry'>): {
  stop(): Promise<void>;
  isLeader(): boolean;
} {
  const { config, db, log } = deps;
  const interval = config.ADMISSION_INTERVAL_MS;
  let stopped = false;
  let leader = false;
  let wake: () => void = () => {};
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  const deficits = new Map<string, number>();

  // The lock lives on a connection of its own, outside the pool: holding it must not take a connection from the
  // process's work, and when that connection breaks (or the process dies) the lock goes with it.
  const lead = async () => {
    const client = new pg.Client({ connectionString: config.DATABASE_URL, connectionTimeoutMillis: 5_000 });
    let alive = true;
    client.on('error', () => (alive = false));
    client.on('end', () => (alive = false));
    await client.connect();
    try {
      const { rows } = await client.query<{ got: boolean }>('select pg_try_advisory_lock($1) as got', [
        String(LEADER_LOCK),
      ]);
      if (!rows[0]?.got) return;
      leader = true;
      let refreshed = 0;
      log.info('admitter: this process admits jobs');
      while (!stopped && alive) {
        const admitted = await admitOnce(deps, deficits);
        if (Date.now() - refreshed >= REFRESH_MS) {
          await refreshBounds(db);
          refreshed = Date.now();
        }
        // While jobs flow, passes follow each other closely, so a window that drains faster than the interval (short
        // jobs) is refilled at once; when a pass finds every window full or nothing waiting, the interval.
        if (!stopped) await pause(admitted.length ? BUSY_PAUSE_MS : interval);
      }
      if (!alive) log.warn('admitter: lost its lock connection; another process may take over');
    } finally {
      leader = false;
      // Ending the session releases the lock.
      await client.end().catch(() => {});
    }
  };

  const running = (async () => {
    while (!stopped) {
      await lead().catch((err) => log.error({ err }, 'admitter pass failed'));
      if (!stopped) await pause(interval * STANDBY_FACTOR);
    }
  })();

  return {
    isLeader: () => leader,
    async stop() {
      stopped = true;
      wake();
      await running;
    },
  };
}
