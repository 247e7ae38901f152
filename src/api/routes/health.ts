import type { ApiServices } from '../../services.js';
import { Hono } from 'hono';
import { ping } from '../../db/index.js';

/** Open routes: liveness and readiness. */
export function healthRoutes(deps: ApiServices) {
  const app = new Hono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const within = <T>(p: Promise<T>) =>
      Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('timeout')), 1_000).unref())]);
    const [redis, postgres] = await Promise.allSettled([within(deps.redis.ping()), within(ping(deps.db))]);
    const checks = {
      redis: redis.status === 'fulfilled' ? 'ok' : 'down',
      postgres: postgres.status === 'fulfilled' ? 'ok' : 'down',
    };
    const ok = checks.redis === 'ok' && checks.postgres === 'ok';
    return c.json({ status: ok ? 'ok' : 'unavailable', checks }, ok ? 200 : 503);
  });
  return app;
}
