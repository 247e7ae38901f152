import { moduleConfig } from './module.mjs';

// The tenant filters only: findJob, findJobsByIds, findByIdempotencyKey, findByClientKey, expireIdempotencyKey and
// listJobs (the run writes and their fencing are covered by other test files, not this configuration's).
export default moduleConfig('db-jobs-tenancy', ['src/db/jobs.ts:91-171'], ['test/jobs-tenancy.test.ts'], {
  setup: false,
  testTimeout: 10_000,
  timeoutMS: 60_000,
});
