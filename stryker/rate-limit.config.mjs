import { moduleConfig } from './module.mjs';

// The per-key rate, the tenant's jobs in flight and image megapixels: test/rate-limit.test.ts drives the middlewares
// on a small app (a private database, no whole app: it runs once per mutant); test/in-flight-counts.test.ts the
// figure the in-flight cap reads. Neither builds an OpenAPI schema, so test/setup.ts is skipped.
export default moduleConfig(
  'rate-limit',
  ['src/api/rate-limit.ts'],
  ['test/rate-limit.test.ts', 'test/in-flight-counts.test.ts'],
  { setup: false, testTimeout: 10_000, timeoutMS: 60_000 },
);
