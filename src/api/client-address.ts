// The client's network address, for audit entries ("from where"). The socket's peer: behind a proxy that is the
// proxy, since no forwarded header is trusted without a configured proxy to trust it from.
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';

export function clientAddress(c: Context): string | null {
  try {
    return getConnInfo(c).remote.address ?? null;
  } catch {
    // No socket: the app was called in process (app.request), as tests do.
    return null;
  }
}
