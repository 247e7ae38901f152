// The project's vitest settings, running only the test files the Stryker configuration named for its module
// (stryker/module.mjs passes them in MUTATION_TEST_FILES; Stryker's own `testFiles` filter misses in its sandbox).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import base from '../vitest.config.js';

const files = process.env.MUTATION_TEST_FILES?.split(',').filter(Boolean);
if (!files?.length) throw new Error('MUTATION_TEST_FILES is not set: run this through a stryker/*.config.mjs');

// Spread, not mergeConfig: that would append these files to the project's `include` (every test file).
export default defineConfig({
  ...base,
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    ...base.test,
    include: files,
    setupFiles: process.env.MUTATION_SETUP === '0' ? [] : base.test?.setupFiles,
    testTimeout: Number(process.env.MUTATION_TEST_TIMEOUT ?? 3_000),
  },
});
