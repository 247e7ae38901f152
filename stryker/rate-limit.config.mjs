import { moduleConfig } from './module.mjs';

// The per-key rate, the tenant's jobs in flight and image megapixels: test/rate-limit.test.ts drives the middlewares
// on a small app; test/in-flight-counts.test.ts the figure the in-flight cap reads.
export default moduleConfig(
  'rate-limit',
  ['src/api/rate-limit.ts'],
  ['test/rate-limit.test.ts', 'test/in-flight-counts.test.ts'],
  { testTimeout: 10_000, timeoutMS: 60_000 },
);
