import { moduleConfig } from './module.mjs';

export default moduleConfig('window-counter', ['src/api/window-counter.ts'], ['test/window-counter.test.ts'], {
  setup: false,
});
