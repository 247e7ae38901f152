import type { z } from 'zod';
import type { JobDefinition } from './types.js';

/** Job types by name. The API validates payloads with it; workers run processors from it. */
export class JobRegistry {
  private readonly defs = new Map<string, JobDefinition>();

  register<S extends z.ZodType, R>(def: JobDefinition<S, R>): this {
    if (!/^[a-z][a-z0-9_-]{0,39}$/.test(def.type)) throw new Error(`bad job type name: ${def.type}`);
    this.defs.set(def.type, def as unknown as JobDefinition);
    return this;
  }

  get(type: string): JobDefinition | undefined {
    return this.defs.get(type);
  }

  types(): string[] {
    return [...this.defs.keys()];
  }

  all(): JobDefinition[] {
    return [...this.defs.values()];
  }
}

export function defineJob<S extends z.ZodType, R>(def: JobDefinition<S, R>): JobDefinition<S, R> {
  return def;
}
