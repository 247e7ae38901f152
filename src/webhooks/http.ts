// One webhook POST: guarded connections, redirects followed by hand so each hop is checked again, a hard timeout.
import http from 'node:http';
import https from 'node:https';
import { checkUrl, guardedLookup, RefusedError, type GuardPolicy } from './guard.js';

export interface PostResult {
  status: number;
  /** The URL that answered, after redirects. */
  url: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 3;

function once(
  url: URL,
  body: string,
  headers: Record<string, string>,
  policy: GuardPolicy,
  signal: AbortSignal,
): Promise<{ status: number; location?: string }> {
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(
      url,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': Buffer.byteLength(body) },
        // A fresh connection per try: a pooled socket would skip the lookup, and with it the guard.
        agent: false,
        lookup: guardedLookup(policy),
        signal,
      },
      (res) => {
        // Read (and drop) the answer, so the connection closes cleanly; receivers' bodies are not kept.
        res.on('data', () => {});
        res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * POSTs `body`; a redirect is followed (up to MAX_REDIRECTS) with the same POST, its target checked like the first.
 * Rejects with RefusedError for a target the guard refuses, or with the network error / timeout.
 */
export async function postJson(
  rawUrl: string,
  body: string,
  headers: Record<string, string>,
  policy: GuardPolicy,
  timeoutMs: number,
): Promise<PostResult> {
  const signal = AbortSignal.timeout(timeoutMs);
  let url = checkUrl(rawUrl, policy);
  for (let hop = 0; ; hop++) {
    let r: { status: number; location?: string };
    try {
      r = await once(
        url,
        body,
        { 'content-type': 'application/json', 'user-agent': 'movie-jobs-webhooks/1', ...headers },
        policy,
        signal,
      );
    } catch (err) {
      if (signal.aborted)
        throw Object.assign(new Error(`timed out after ${timeoutMs} ms`), { code: 'webhook_timeout' });
      throw err;
    }
    if (!REDIRECTS.has(r.status) || !r.location) return { status: r.status, url: url.toString() };
    if (hop >= MAX_REDIRECTS)
      throw Object.assign(new Error(`more than ${MAX_REDIRECTS} redirects`), { code: 'webhook_redirects' });
    let next: string;
    try {
      next = new URL(r.location, url).toString();
    } catch {
      throw new RefusedError(`redirect to an invalid URL: ${r.location.slice(0, 200)}`);
    }
    url = checkUrl(next, policy);
  }
}
