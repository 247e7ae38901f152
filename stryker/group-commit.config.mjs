import { moduleConfig } from './module.mjs';

export default moduleConfig('group-commit', ['src/group-commit.ts'], ['test/group-commit.test.ts'], { setup: false });
