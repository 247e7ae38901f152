import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { email } from './email/index.js';
import { image } from './image/index.js';
import { recommendations, recommendationsChunk } from './recommendations/index.js';
import { JobRegistry } from './registry.js';
import { report } from './report/index.js';
import type { JobDefinition } from './types.js';

export { JobRegistry, defineJob } from './registry.js';
export * from './types.js';
// What a job module throws, for modules loaded from JOB_MODULES that import only this file.
export { PermanentError } from '../errors.js';

/** The product's job types. */
export function createRegistry(): JobRegistry {
  return new JobRegistry()
    .register(recommendations)
    .register(recommendationsChunk)
    .register(email)
    .register(image)
    .register(report);
}

/**
 * Extra job modules named in JOB_MODULES (paths from the repo root), each default-exporting a definition or a list.
 * Tests use this seam to give real worker processes job types that fail, hang or crash on demand.
 */
export async function loadJobModules(registry: JobRegistry, modules: readonly string[]): Promise<JobRegistry> {
  for (const m of modules) {
    const mod = (await import(pathToFileURL(path.resolve(m)).href)) as { default: JobDefinition | JobDefinition[] };
    for (const def of [mod.default].flat()) registry.register(def);
  }
  return registry;
}
