import { moduleConfig } from './module.mjs';

export default moduleConfig('webhooks-guard', ['src/webhooks/guard.ts'], ['test/webhook-guard.test.ts'], {
  setup: false,
});
