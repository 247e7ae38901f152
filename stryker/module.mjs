// Shared Stryker settings: each module is mutated against only the test files written for it, so a module's score
// says what its own tests catch, not what some end-to-end test happens to touch.
//
// TypeScript 7 ships no compiler API, and Stryker's tsconfig rewriter loads one (`parseConfigFileTextToJson`) to
// rewrite paths in the sandbox's tsconfig.json. vitest (through esbuild) never reads those paths, so the rewriter is
// pointed at a file that does not exist and has nothing to do.
/**
 * One module's configuration.
 * @param {string} name the report's name
 * @param {string[]} mutate the module's files (or line ranges)
 * @param {string[]} testFiles its own tests, the only ones run
 * @param {{testTimeout?: number, setup?: boolean, timeoutMS?: number}} [opts]
 *   `testTimeout`: a mutant that leaves a callback uncalled hangs its test; a short vitest limit fails it in seconds,
 *   where Stryker's own timeout would restart the test runner (slow). `setup: false` skips test/setup.ts
 *   (zod-openapi) for tests that never build a schema: it is most of a small test file's time.
 * @returns {import('@stryker-mutator/api/core').PartialStrykerOptions}
 */
export function moduleConfig(name, mutate, testFiles, { testTimeout = 3_000, setup = true, timeoutMS = 30_000 } = {}) {
  // Read by stryker/vitest.config.ts in the test runner processes Stryker starts from this one.
  process.env.MUTATION_TEST_FILES = testFiles.join(',');
  process.env.MUTATION_TEST_TIMEOUT = String(testTimeout);
  process.env.MUTATION_SETUP = setup ? '1' : '0';
  return {
    packageManager: 'npm',
    testRunner: 'vitest',
    plugins: ['@stryker-mutator/vitest-runner'],
    vitest: { configFile: 'stryker/vitest.config.ts', related: false },
    mutate,
    tsconfigFile: 'stryker/no-tsconfig.json',
    coverageAnalysis: 'perTest',
    // Stryker's own limit on a whole run, before-all hooks included (a fresh database and its migrations): generous, so
    // a loaded machine does not turn slow runs into 'timed out' (counted as detected); hangs end at testTimeout.
    timeoutMS,
    concurrency: 2,
    thresholds: { high: 95, low: 85, break: 85 },
    reporters: ['html', 'clear-text', 'progress'],
    htmlReporter: { fileName: `reports/mutation/${name}.html` },
    // Every module's sandbox under .stryker-tmp/, which is kept out of the others' sandboxes (ignorePatterns).
    // Anchored to the root (gitignore syntax): an unanchored 'reports' would also drop any source folder so named.
    tempDirName: `.stryker-tmp/${name}`,
    ignorePatterns: [
      '/.stryker-tmp',
      '/var',
      '/dist',
      '/reports',
      '/bench/results',
      '/grafana',
      '/docs',
      '*.cpuprofile',
    ],
    cleanTempDir: 'always',
  };
}
