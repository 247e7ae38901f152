import { moduleConfig } from './module.mjs';

export default moduleConfig('mail-address', ['src/jobs/email/address.ts'], ['test/mail-address.test.ts'], {
  setup: false,
});
