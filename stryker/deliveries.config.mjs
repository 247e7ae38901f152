import { moduleConfig } from './module.mjs';

// The email deliveries ledger: who may claim a recipient, the claims and outcomes on PostgreSQL.
export default moduleConfig('mail-deliveries', ['src/jobs/email/deliveries.ts'], ['test/email-claims.test.ts'], {
  testTimeout: 10_000,
  timeoutMS: 60_000,
});
