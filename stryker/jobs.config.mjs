import { moduleConfig } from './module.mjs';

// The tenant filters only: findJob, findJobsByIds, findByIdempotencyKey, findByClientKey, expireIdempotencyKey and
// listJobs. The run
// writes (fencing) are another engineer's this round; widen the range to the whole file once they have tests here.
export default moduleConfig('db-jobs-tenancy', ['src/db/jobs.ts:82-172'], ['test/jobs-tenancy.test.ts'], {
  setup: false,
  testTimeout: 10_000,
  timeoutMS: 60_000,
});
