import { moduleConfig } from './module.mjs';

// The reconciler's decisions, one pass at a time and its lock and horizon, against real Redis and PostgreSQL.
export default moduleConfig('reconciler', ['src/workers/reconciler.ts'], ['test/reconciler.test.ts'], {
  testTimeout: 10_000,
  timeoutMS: 60_000,
});
