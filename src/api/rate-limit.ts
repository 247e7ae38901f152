// Abuse limits: a request rate per API key, and per-tenant quotas on work (jobs in flight, image megapixels).
// Counters live in Redis so every API process shares them; while Redis is down each process counts in memory
// rather than refusing reads that only need PostgreSQL.
import type { ApiServices } from '../services.js';
import type { Context, MiddlewareHandler } from 'hono';
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterRes } from 'rate-limiter-flexible';
import { findFile } from '../files/index.js';
import { probe } from '../jobs/image/pipeline.js';
import type { Principal } from '../auth/keys.js';
import { jobsInFlight } from '../db/jobs.js';
import type { AuthEnv } from './auth.js';
import { ProblemError } from './errors.js';
import { WindowCounter } from './window-counter.js';
import { keys } from '../queues/keys.js';

const WINDOW_S = 60;

function tooMany(detail: string, retryAfterS: number, headers: Record<string, string> = {}) {
  return new ProblemError(
    429,
    'rate-limited',
    detail,
    {},
    { ...headers, 'Retry-After': String(Math.max(1, Math.ceil(retryAfterS))) },
  );
}

/**
 * IETF draft "RateLimit header fields for HTTP" (the -07 shape most clients read) for a request `refused` that asked
 * for `cost` points: the counter took them before refusing, and gives them back, so what is left is what the tenant
 * had before this request (not the 0 the counter answered), and a smaller request may still pass.
 */
function refusedHeaders(limit: number, cost: number, refused: RateLimiterRes): Record<string, string> {
  return {
    'RateLimit-Limit': String(limit),
    'RateLimit-Remaining': String(Math.max(0, limit - (refused.consumedPoints - cost))),
    'RateLimit-Reset': String(Math.max(0, Math.ceil(refused.msBeforeNext / 1000))),
    'RateLimit-Policy': `${limit};w=${WINDOW_S}`,
  };
}

function limiter(deps: ApiServices, name: string, points: number) {
  return new RateLimiterRedis({
    storeClient: deps.redis,
    keyPrefix: keys(deps.config).rateLimit(name),
    points,
    duration: WINDOW_S,
    // Redis down: decide in memory at once instead of waiting for a command to time out. With an insurance limiter,
    // consume() rejects only with a refusal (a RateLimiterRes), never with Redis's error.
    rejectIfRedisNotReady: true,
    insuranceLimiter: new RateLimiterMemory({ points, duration: WINDOW_S }),
  });
}

/**
 * RATE_LIMIT_PER_MINUTE requests per API key (by key id: the key itself never reaches Redis), for every role:
 * a leaked operator key is the one that most needs a brake. Every answer carries RateLimit-* headers. The count
 * is a window shared through Redis but answered from memory (src/api/window-counter.ts): no round trip per request.
 */
export function rateLimitPerKey(deps: ApiServices): MiddlewareHandler<AuthEnv> {
  const limit = deps.config.RATE_LIMIT_PER_MINUTE;
  if (limit === 0) return (_c, next) => next();
  const counter = new WindowCounter(deps.redis, keys(deps.config).rateLimit('key'), limit, WINDOW_S * 1000);
  const policy = `${limit};w=${WINDOW_S}`;
  return async (c, next) => {
    const t = counter.take(c.get('principal').keyId);
    const headers = {
      'RateLimit-Limit': String(limit),
      'RateLimit-Remaining': String(t.remaining),
      'RateLimit-Reset': String(Math.ceil(t.resetMs / 1000)),
      'RateLimit-Policy': policy,
    };
    if (!t.ok) throw tooMany(`At most ${limit} requests per minute per API key.`, t.resetMs / 1000, headers);
    await next();
    try {
      // A tenant quota's 429 already says which limit it hit.
      if (!c.res.headers.has('RateLimit-Limit')) for (const [k, v] of Object.entries(headers)) c.res.headers.set(k, v);
    } catch {
      // A response with immutable headers (a proxied one) goes out without them.
    }
  };
}

/** What one request asks the platform to run, read from its JSON body before validation (which comes later). */
interface Ask {
  jobs: number;
  images: { file_id: string; variants: number }[];
}

const DEFAULT_IMAGE_VARIANTS = 3;

/** The request's ask, or undefined when it asks for no job (another route, a malformed body, an empty bulk). */
async function askOf(c: Context<AuthEnv>): Promise<Ask | undefined> {
  const path = c.req.path;
  if (/^\/v1\/jobs\/[^/]+\/retry$/.test(path) || /^\/v1\/users\/[^/]+\/recommendations$/.test(path))
    return { jobs: 1, images: [] };
  if (path !== '/v1/jobs' && path !== '/v1/jobs/bulk') return undefined;
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    return undefined; // malformed: validation answers 400
  }
  const specs: unknown[] =
    path === '/v1/jobs'
      ? [body]
      : Array.isArray((body as { jobs?: unknown })?.jobs)
        ? (body as { jobs: unknown[] }).jobs
        : [];
  if (specs.length === 0) return undefined;
  const images: Ask['images'] = [];
  for (const s of specs) {
    const spec = s as { type?: unknown; payload?: { file_id?: unknown; variants?: unknown } } | null;
    if (spec?.type !== 'image' || typeof spec.payload?.file_id !== 'string') continue;
    const variants = Array.isArray(spec.payload.variants) ? spec.payload.variants.length : DEFAULT_IMAGE_VARIANTS;
    images.push({ file_id: spec.payload.file_id, variants: Math.max(1, Math.min(variants, 8)) });
  }
  return { jobs: Math.min(specs.length, 1000), images };
}

/**
 * Live jobs per tenant as this process last counted them, plus what it has accepted since. A request that fits under
 * the cap by that figure goes on without waiting for a query, so a tenant with thousands of live jobs does not pay an
 * index scan of them per submission. A figure older than `ttlMs` is recounted in the background (one query at a time
 * per tenant). A refusal is always decided on a fresh count: finished jobs free their slots at once.
 */
export class InFlightCounts {
  private readonly counted = new Map<string, { n: number; at: number }>();
  private readonly counting = new Map<string, Promise<number>>();

  constructor(
    private readonly count: (tenant: string) => Promise<number>,
    private readonly ttlMs = 1_000,
  ) {}

  /** The tenant's live jobs: the figure in memory if `enough` accepts it (recounted behind it when old), else a fresh count. */
  async live(tenant: string, enough: (n: number) => boolean): Promise<number> {
    const known = this.counted.get(tenant);
    if (known && enough(known.n)) {
      if (Date.now() - known.at >= this.ttlMs) this.recount(tenant).catch(() => undefined);
      return known.n;
    }
    return this.recount(tenant);
  }

  private recount(tenant: string): Promise<number> {
    let pending = this.counting.get(tenant);
    if (!pending) {
      const at = Date.now();
      pending = this.count(tenant)
        .then((n) => (this.counted.set(tenant, { n, at }), n))
        .finally(() => this.counting.delete(tenant));
      this.counting.set(tenant, pending);
    }
    return pending;
  }

  /** Jobs this process has just accepted for the tenant: counted until the next recount sees them. */
  accepted(tenant: string, n: number): void {
    const known = this.counted.get(tenant);
    if (known) known.n += n;
  }
}

/**
 * Megapixels of one uploaded image, from its header only; 0 when it is missing, not an image or too large (the job will
 * say so), or when `fileId` is no file id at all (validation answers 400; findFile never sends such a string, a NUL
 * byte for one, to PostgreSQL).
 */
async function megapixels(deps: ApiServices, tenant: string, fileId: string): Promise<number> {
  const row = await findFile(deps.db, fileId, tenant);
  if (!row) return 0;
  try {
    const input = deps.storage.localPath
      ? deps.storage.localPath(row.storage_key)
      : await streamToBuffer(await deps.storage.get(row.storage_key));
    // The image pipeline's own header probe: untrusted bytes meet only the allowed libvips loaders. It throws
    // above IMAGE_MAX_PIXELS, where the worker refuses the image before decoding it: no work to charge for.
    const { width, height } = await probe(input, deps.config.IMAGE_MAX_PIXELS);
    return (width * height) / 1e6;
  } catch {
    return 0;
  }
}

async function streamToBuffer(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * Per-tenant quotas on routes that create jobs: at most TENANT_MAX_IN_FLIGHT live jobs, and at most
 * TENANT_IMAGE_MEGAPIXELS_PER_MINUTE of image work (source megapixels × variants) per minute. Operators are
 * exempt: they run backfills and recoveries. The in-flight cap is soft: concurrent requests may both see room, and
 * what other API processes accept reaches this one's figure within a second (InFlightCounts). The image budget is
 * refunded when the request is not accepted.
 */
export function tenantQuotas(deps: ApiServices): MiddlewareHandler<AuthEnv> {
  const cap = deps.config.TENANT_MAX_IN_FLIGHT;
  const mpLimit = deps.config.TENANT_IMAGE_MEGAPIXELS_PER_MINUTE;
  const mp = mpLimit > 0 ? limiter(deps, 'image-mp', mpLimit) : undefined;
  const inFlight = new InFlightCounts((tenant) => jobsInFlight(deps.db, tenant, cap));
  return async (c, next) => {
    if (c.req.method !== 'POST') return next();
    const principal: Principal = c.get('principal');
    if (principal.role === 'operator') return next();
    const ask = await askOf(c);
    if (!ask) return next();

    if (cap > 0) {
      const live = await inFlight.live(principal.tenant, (n) => n + ask.jobs <= cap);
      if (live + ask.jobs > cap) {
        throw tooMany(
          `Your tenant has ${live} jobs queued or running; the limit is ${cap}. Wait for some to finish.`,
          5,
          {
            'RateLimit-Limit': String(cap),
            'RateLimit-Remaining': String(Math.max(0, cap - live)),
          },
        );
      }
    }

    let charged = 0;
    if (mp && ask.images.length) {
      const cost = Math.ceil(
        (
          await Promise.all(
            ask.images.map(async (i) => (await megapixels(deps, principal.tenant, i.file_id)) * i.variants),
          )
        ).reduce((a, b) => a + b, 0),
      );
      if (cost > mpLimit) {
        throw new ProblemError(
          422,
          'over-quota',
          `These image jobs need ${cost} megapixels of work; your tenant may submit ${mpLimit} per minute. Submit fewer images or variants at once.`,
        );
      }
      if (cost > 0) {
        // Only a refusal rejects (see limiter): while Redis is down the insurance limiter counts in memory.
        const refused = await mp.consume(principal.tenant, cost).then(
          () => undefined,
          (res: RateLimiterRes) => res,
        );
        if (refused) {
          // The counter took the points even though it refused them; a refused request must not cost anything.
          await mp.reward(principal.tenant, cost).catch(() => undefined);
          throw tooMany(
            `Image work is limited to ${mpLimit} megapixels per minute per tenant; this request needs ${cost}.`,
            refused.msBeforeNext / 1000,
            refusedHeaders(mpLimit, cost, refused),
          );
        }
        charged = cost;
      }
    }
    try {
      await next();
    } finally {
      if (charged && c.res.status >= 300) await mp!.reward(principal.tenant, charged).catch(() => undefined);
    }
    // With no cap nothing was counted, and accepted() ignores a tenant it has not counted.
    if (c.res.status === 202) inFlight.accepted(principal.tenant, ask.jobs);
  };
}
