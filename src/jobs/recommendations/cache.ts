// Two caches. Models: per tenant, in the worker process's memory, shared by every job it runs. Results: per user,
// in Redis under the queue prefix, for the GET route.
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { Db } from '../../db/index.js';
import type { RecommendationItem } from '../../db/types.js';
import type { RedisClient } from '../../queues/redis.js';
import { catalogVersion, loadTrainingData } from './data.js';
import { train, type Model } from './model.js';
import { Scorer } from './recommend.js';
import { keys } from '../../queues/keys.js';

/** Models kept per process; the least recently used goes first. */
const MAX_MODELS = 8;

interface Entry {
  model?: Model;
  scorer?: Scorer;
  loading?: Promise<Model>;
  usedAt: number;
  /** When the catalog version was last read. */
  checkedAt: number;
}

/**
 * A tenant's model is retrained when its catalog version (bumped by every movie or rating write) has moved AND the
 * model is older than `refreshMs` (the version is read at most once a second per tenant). So a steady trickle of
 * ratings cannot make every job retrain. While a newer model trains, jobs keep using the current one (stale while
 * revalidate): a single user's job never waits for a retraining, only for the very first model of a tenant.
 * A user's own ratings are read fresh by each job in any case, so their newest rating always counts (as a seed,
 * and as "already seen"). Concurrent jobs of one tenant share one training (single flight).
 */
export class ModelCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly db: Db,
    private readonly refreshMs: number,
    private readonly log?: Logger,
  ) {}

  async get(tenant: string, signal?: AbortSignal): Promise<{ model: Model; scorer: Scorer }> {
    let e = this.entries.get(tenant);
    if (!e) {
      e = { usedAt: Date.now(), checkedAt: 0 };
      this.entries.set(tenant, e);
      this.evict();
    }
    const now = (e.usedAt = Date.now());
    if (
      e.model &&
      !e.loading &&
      now - e.model.builtAt >= this.refreshMs &&
      now - e.checkedAt >= Math.min(this.refreshMs, 1_000)
    ) {
      e.checkedAt = now;
      const version = await catalogVersion(this.db, tenant);
      if (version !== e.model.version && !e.loading) {
        this.load(tenant, e);
        // Nobody awaits a background retraining: log its failure; the current model stays in service.
        e.loading!.catch((err) => this.log?.error({ err, tenant }, 'retraining the recommendation model failed'));
      }
    }
    if (!e.model) {
      if (!e.loading) this.load(tenant, e);
      await e.loading;
      // The training is shared, so one job's cancellation does not stop it; the job itself stops here.
      signal?.throwIfAborted();
    }
    return { model: e.model!, scorer: e.scorer! };
  }

  private load(tenant: string, e: Entry) {
    e.loading = (async () => {
      const started = Date.now();
      // The version is read first: a write during loading leaves the model one version behind, so it is redone.
      const version = await catalogVersion(this.db, tenant);
      const data = await loadTrainingData(this.db, tenant);
      const loadMs = Date.now() - started;
      const cpu = process.cpuUsage();
      const model = await train(data.movies, data.matrix, version, {
        tick: async () => {
          // Yield, so BullMQ can renew locks (and other jobs can run) while a big model trains.
          await new Promise((r) => setImmediate(r));
        },
      });
      const used = process.cpuUsage(cpu);
      const trainCpuMs = Math.round((used.user + used.system) / 1000);
      this.log?.info(
        {
          tenant,
          version,
          movies: model.movies.length,
          users: model.users,
          ratings: model.ratings,
          load_ms: loadMs,
          train_ms: model.trainMs,
          train_cpu_ms: trainCpuMs,
        },
        'recommendation model trained',
      );
      e.model = model;
      e.scorer = new Scorer(model);
      return model;
    })().finally(() => {
      e.loading = undefined;
    });
    // A failure is seen by the awaiting job(s); nobody else must see it as unhandled.
    e.loading.catch(() => {});
  }

  private evict() {
    while (this.entries.size > MAX_MODELS) {
      const oldest = [...this.entries].sort((a, b) => a[1].usedAt - b[1].usedAt)[0][0];
      this.entries.delete(oldest);
    }
  }
}

const caches = new WeakMap<Db, ModelCache>();

/** One cache per database handle, i.e. per worker process (tests run several in one process). */
export function modelCache(db: Db, config: Config, log?: Logger): ModelCache {
  let c = caches.get(db);
  if (!c) caches.set(db, (c = new ModelCache(db, config.RECO_MODEL_REFRESH_MS, log)));
  return c;
}

export interface CachedResult {
  user_id: string;
  items: RecommendationItem[];
  strategy: string;
  generated_at: string;
  job_id: string | null;
}

/** Results live in Redis for a day; a rating deletes its user's entry, so the TTL only bounds a lost delete. */
const RESULT_TTL_S = 24 * 3600;

export async function cacheResults(
  redis: RedisClient,
  config: Config,
  tenant: string,
  results: CachedResult[],
): Promise<void> {
  if (!results.length) return;
  const p = redis.pipeline();
  for (const r of results)
    p.set(keys(config).recommendations(tenant, r.user_id), JSON.stringify(r), 'EX', RESULT_TTL_S);
  await p.exec();
}

export async function readCachedResult(
  redis: RedisClient,
  config: Config,
  tenant: string,
  userId: string,
): Promise<CachedResult | undefined> {
  const v = await redis.get(keys(config).recommendations(tenant, userId));
  return v ? (JSON.parse(v) as CachedResult) : undefined;
}

export async function forgetResults(
  redis: RedisClient,
  config: Config,
  tenant: string,
  userIds: string[],
): Promise<void> {
  const unique = [...new Set(userIds)];
  const p = redis.pipeline();
  for (const u of unique) p.del(keys(config).recommendations(tenant, u));
  await p.exec();
}
