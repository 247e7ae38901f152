import type { MiddlewareHandler } from 'hono';
import { LRUCache } from 'lru-cache';
import { findPrincipal, KEY_FORMAT, type Principal } from '../auth/keys.js';
import type { Db } from '../db/index.js';
import { problem } from './errors.js';

export type AuthEnv = { Variables: { principal: Principal; requestId: string } };

/** Bearer key, or HTTP Basic with the key as the password (so a browser can log in). */
export function keyFromHeader(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const [scheme, value] = header.split(' ', 2);
  if (!value) return undefined;
  if (/^bearer$/i.test(scheme)) return value.trim();
  if (/^basic$/i.test(scheme)) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : undefined;
  }
  return undefined;
}

/** What is wrong with an Authorization header that carries no usable key, and how to send one. */
function authHint(header: string): string {
  const send = 'Send the key as `Authorization: Bearer <key>`.';
  if (/^mj_/i.test(header.trim())) return `The Authorization header holds a key without its scheme. ${send}`;
  if (/^bearer$/i.test(header.trim())) return `The Authorization header says Bearer but carries no key. ${send}`;
  return `The Authorization header is not a Bearer key (or HTTP Basic with the key as the password). ${send}`;
}

/** Positive and negative lookups are bounded apart, so a flood of unknown keys never evicts a valid one. */
const KEY_CACHE_MAX = 10_000;

interface KeyCache {
  known: LRUCache<string, Principal>;
  unknown: LRUCache<string, true>;
}
const caches = new Set<KeyCache>();

/** Drops a revoked key from every lookup cache in this process (see src/auth/revocation.ts). */
export function forgetKey(keyId: string): void {
  for (const cache of caches) for (const [k, v] of cache.known.entries()) if (v.keyId === keyId) cache.known.delete(k);
}

/**
 * Authenticates every request it guards. Lookups are cached for a few seconds (the hot path of every
 * request); a revocation announced on Redis drops the entry at once, else it lapses when the entry expires.
 * Unknown keys are remembered as unknown for as long, in a cache of their own; a string that is not shaped like
 * a key costs no query at all; concurrent lookups of one key share one query. Both caches evict the least
 * recently used entry when full.
 */
export function authenticate(db: Db, secret: string, ttlMs = 5_000): MiddlewareHandler<AuthEnv> {
  const cache: KeyCache = {
    known: new LRUCache({ max: KEY_CACHE_MAX, ttl: ttlMs }),
    unknown: new LRUCache({ max: KEY_CACHE_MAX, ttl: ttlMs }),
  };
  caches.add(cache);
  const pending = new Map<string, Promise<Principal | undefined>>();
  const lookup = (key: string): Promise<Principal | undefined> => {
    let p = pending.get(key);
    if (!p) {
      p = findPrincipal(db, secret, key)
        .then((principal) => {
          if (principal) cache.known.set(key, principal);
          else cache.unknown.set(key, true);
          return principal;
        })
        .finally(() => pending.delete(key));
      pending.set(key, p);
    }
    return p;
  };
  return async (c, next) => {
    const header = c.req.header('authorization');
    const key = keyFromHeader(header);
    if (!key) throw problem.unauthorized(header ? authHint(header) : undefined);
    if (key.length > 200) throw problem.unauthorized();
    const principal =
      cache.known.get(key) ?? (!KEY_FORMAT.test(key) || cache.unknown.has(key) ? undefined : await lookup(key));
    if (!principal) throw problem.unauthorized('The API key is unknown or revoked.');
    c.set('principal', principal);
    await next();
  };
}

/** Operators and viewers read across tenants (reports, search, queues, audit); only operators change anything. */
export function readsAllTenants(p: Principal): boolean {
  return p.role === 'operator' || p.role === 'viewer';
}

/** An operator route that changes something: operators only (a viewer gets 403 like a client). */
export function requireOperator(): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    if (c.get('principal').role !== 'operator') throw problem.forbidden('This route is for operators.');
    await next();
  };
}

/** An operator route that only reads: operators and viewers. */
export function requireOperatorRead(): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    if (!readsAllTenants(c.get('principal'))) throw problem.forbidden('This route is for operators and viewers.');
    await next();
  };
}

/**
 * A viewer changes nothing: every request but GET and HEAD is refused before any route (or quota) sees it, so a
 * write route added later is covered without its author thinking of viewers.
 */
export function viewersReadOnly(): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    if (c.get('principal').role === 'viewer' && c.req.method !== 'GET' && c.req.method !== 'HEAD')
      throw problem.forbidden('A viewer key reads and changes nothing; use an operator or client key.');
    await next();
  };
}

/** The tenant filter for reads: a client sees its own tenant, operators and viewers all. */
export function tenantScope(p: Principal): string | undefined {
  return readsAllTenants(p) ? undefined : p.tenant;
}
