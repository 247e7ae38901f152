// The browser session shared by /console and /admin: log in once with an API key, then a cookie. And the one
// cross-site guard for both: every non-GET request must come from this origin (Origin / Sec-Fetch-Site); console
// forms also carry a per-session CSRF token.
//
// A session is a random id in an HttpOnly, SameSite=Strict cookie; Redis holds (under a hash of the id, so a Redis
// reader cannot replay it) the key id and the CSRF token, with an expiry. Every request re-reads the key from
// PostgreSQL, so revoking the key ends its sessions at once.
import type { ApiServices } from '../services.js';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { findPrincipal, findPrincipalById, type Principal } from '../auth/keys.js';
import { problem } from './errors.js';
import { keys } from '../queues/keys.js';

const SESSION_COOKIE = 'mj_session';
/** Sessions end this long after login (and at logout, or when the key is revoked). */
const SESSION_TTL_S = 8 * 3600;
const SAFE_METHOD = /^(GET|HEAD|OPTIONS)$/;

export interface Session {
  principal: Principal;
  csrf: string;
}

export type SessionEnv = { Variables: { principal: Principal; session: Session; requestId: string } };

const sessionKey = (deps: ApiServices, id: string) =>
  keys(deps.config).session(createHash('sha256').update(id).digest('base64url'));

/** Behind a TLS-terminating proxy the request URL is http; the proxy says https in X-Forwarded-Proto. */
function overTls(c: Context): boolean {
  return new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
}

/** Logs a key in: the principal, or undefined for an unknown or revoked key. Sets the session cookie. */
export async function startSession(deps: ApiServices, c: Context, key: string): Promise<Principal | undefined> {
  if (!key || key.length > 200) return undefined;
  const principal = await findPrincipal(deps.db, deps.config.API_KEY_SECRET, key);
  if (!principal) return undefined;
  const id = randomBytes(32).toString('base64url');
  const csrf = randomBytes(24).toString('base64url');
  await deps.redis.set(sessionKey(deps, id), JSON.stringify({ keyId: principal.keyId, csrf }), 'EX', SESSION_TTL_S);
  setCookie(c, SESSION_COOKIE, id, {
    httpOnly: true,
    sameSite: 'Strict',
    secure: overTls(c),
    path: '/',
    maxAge: SESSION_TTL_S,
  });
  return principal;
}

export async function endSession(deps: ApiServices, c: Context): Promise<void> {
  const id = getCookie(c, SESSION_COOKIE);
  if (id) await deps.redis.del(sessionKey(deps, id));
  deleteCookie(c, SESSION_COOKIE, { path: '/', secure: overTls(c) });
}

/** The request's live session: undefined without a cookie, after expiry or logout, or once the key is revoked. */
export async function readSession(deps: ApiServices, c: Context): Promise<Session | undefined> {
  const id = getCookie(c, SESSION_COOKIE);
  if (!id || id.length > 100) return undefined;
  const stored = await deps.redis.get(sessionKey(deps, id));
  if (!stored) return undefined;
  const { keyId, csrf } = JSON.parse(stored) as { keyId: string; csrf: string };
  const principal = await findPrincipalById(deps.db, keyId);
  if (!principal) {
    await deps.redis.del(sessionKey(deps, id));
    return undefined;
  }
  return { principal, csrf };
}

/** True when the form's token is the session's. */
export function csrfTokenMatches(session: Session, token: unknown): boolean {
  if (typeof token !== 'string') return false;
  const a = Buffer.from(token);
  const b = Buffer.from(session.csrf);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A browser says where a request comes from: Sec-Fetch-Site (every current browser), else Origin. Only this origin
 * may change anything. A request with neither header is not from a browser page (curl, a client library with a
 * Bearer key), so no cookie or cached Basic password rides on it unasked: it passes.
 */
function isSameOrigin(c: Context): boolean {
  const site = c.req.header('sec-fetch-site');
  if (site !== undefined) return site === 'same-origin';
  const origin = c.req.header('origin');
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === c.req.header('host');
  } catch {
    return false;
  }
}

/** Refuses cross-site non-GET requests, whatever their content type (hono's csrf() checks form types only). */
export function sameOriginOnly(): MiddlewareHandler {
  return async (c, next) => {
    if (!SAFE_METHOD.test(c.req.method) && !isSameOrigin(c))
      throw problem.forbidden('Cross-site requests that change anything are refused; use this site’s own pages.');
    await next();
  };
}
