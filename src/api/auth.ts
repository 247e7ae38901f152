import type { MiddlewareHandler } from 'hono';
import { findPrincipal, type Principal } from '../auth/keys.js';
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

type KeyCache = Map<string, { principal: Principal | undefined; expires: number }>;
const caches = new Set<KeyCache>();

/** Drops a revoked key from every lookup cache in this process (see src/auth/revocation.ts). */
export function forgetKey(keyId: string): void {
  for (const cache of caches) for (const [k, v] of cache) if (v.principal?.keyId === keyId) cache.delete(k);
}

/**
 * Authenticates every request it guards. Lookups are cached for a few seconds (the hot path of every
 * request); a revocation announced on Redis drops the entry at once, else it lapses when the entry expires.
 */
export function authenticate(db: Db, secret: string, ttlMs = 5_000): MiddlewareHandler<AuthEnv> {
  const cache: KeyCache = new Map();
  caches.add(cache);
  return async (c, next) => {
    const header = c.req.header('authorization');
    const key = keyFromHeader(header);
    if (!key || key.length > 200) throw problem.unauthorized(header ? authHint(header) : undefined);
    const now = Date.now();
    let hit = cache.get(key);
    if (!hit || hit.expires < now) {
      if (cache.size > 10_000) cache.clear();
      hit = { principal: await findPrincipal(db, secret, key), expires: now + ttlMs };
      cache.set(key, hit);
    }
    if (!hit.principal) throw problem.unauthorized('The API key is unknown or revoked.');
    c.set('principal', hit.principal);
    await next();
  };
}

export function requireOperator(): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    if (c.get('principal').role !== 'operator') throw problem.forbidden('This route is for operators.');
    await next();
  };
}

/** The tenant filter for reads: a client sees its own tenant, an operator all. */
export function tenantScope(p: Principal): string | undefined {
  return p.role === 'operator' ? undefined : p.tenant;
}
