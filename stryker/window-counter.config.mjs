import { moduleConfig } from './module.mjs';

export default moduleConfig('window-counter', ['src/api/window-counter.ts'], ['test/window-counter.test.ts'], {
  setup: false,
  // Its Redis-sharing test waits for real syncs: 3 s was too short for it on a loaded 2-core machine.
  testTimeout: 10_000,
});
