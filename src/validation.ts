// Validation messages that say what to send: one zod error map for every schema of the platform (requests, payloads,
// configuration), and the flattening of a union's failure to the field that failed, with the shapes it accepts.
// A schema's own `error:`/refine message still wins over these.
import { z } from 'zod';

type Schema = z.core.$ZodType;

/** A short description of what a schema accepts: `{user_id, limit?}`, `a list of …`, `"welcome"`. */
function describeSchema(s: Schema, depth = 0): string {
  const def = s._zod.def as z.core.$ZodTypeDef & Record<string, unknown>;
  switch (def.type) {
    case 'object': {
      const shape = def.shape as Record<string, Schema>;
      const keys = Object.entries(shape).map(([k, v]) => {
        const vd = v._zod.def as { type: string; values?: unknown[] };
        if (vd.type === 'literal' && vd.values?.length === 1) return `${k}: ${JSON.stringify(vd.values[0])}`;
        return ['optional', 'default', 'prefault'].includes(vd.type) ? `${k}?` : k;
      });
      return `{${keys.join(', ')}}`;
    }
    case 'literal':
      return (def.values as unknown[]).map((v) => JSON.stringify(v)).join(' or ');
    case 'enum':
      return Object.values(def.entries as Record<string, unknown>)
        .map((v) => JSON.stringify(v))
        .join(' or ');
    case 'array': {
      if (depth > 1) return 'a list';
      const element = describeSchema(def.element as Schema, depth + 1);
      return /^an? [a-z]+$/.test(element) ? `a list of ${element.replace(/^an? /, '')}s` : `a list of ${element}`;
    }
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
      return describeSchema(def.innerType as Schema, depth);
    case 'pipe':
      return describeSchema(def.in as Schema, depth);
    case 'union':
      return (def.options as Schema[]).map((o) => describeSchema(o, depth + 1)).join(' or ');
    case 'string':
      return 'a string';
    case 'number':
    case 'int':
      return 'a number';
    case 'boolean':
      return 'true or false';
    case 'record':
      return 'an object';
    default:
      return def.type;
  }
}

const ARTICLE: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'an object',
  array: 'a list',
  date: 'a date',
  bigint: 'an integer',
};

function received(input: unknown): string {
  if (input === null) return 'null';
  if (Array.isArray(input)) return 'a list';
  return ARTICLE[typeof input] ?? typeof input;
}

function plural(n: number | bigint, one: string, many = `${one}s`) {
  return `${n} ${Number(n) === 1 ? one : many}`;
}

function sizeLimit(origin: string, n: number | bigint, inclusive: boolean | undefined, most: boolean): string {
  const bound = most ? (inclusive === false ? 'less than' : 'at most') : inclusive === false ? 'more than' : 'at least';
  switch (origin) {
    case 'array':
    case 'set':
      return `${bound} ${plural(n, 'item')}`;
    case 'string':
      return `${bound} ${plural(n, 'character')}`;
    case 'file':
      return `${bound} ${plural(n, 'byte')}`;
    case 'date':
      return `${most ? 'no later' : 'no earlier'} than ${new Date(Number(n)).toISOString()}`;
    default:
      return `${bound} ${n}`;
  }
}

/** zod's error map: the message of each issue a schema does not word itself. */
function message(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case 'invalid_type':
      if (iss.input === undefined) return `required: send ${ARTICLE[iss.expected] ?? iss.expected}`;
      return `must be ${ARTICLE[iss.expected] ?? iss.expected}, not ${received(iss.input)}`;
    case 'too_big':
      return `must be ${sizeLimit(iss.origin, iss.maximum, iss.inclusive, true)}`;
    case 'too_small':
      if (iss.origin === 'array' && Number(iss.minimum) === 1 && iss.inclusive !== false)
        return 'must not be empty: send at least 1 item';
      if (iss.origin === 'string' && Number(iss.minimum) === 1 && iss.inclusive !== false) return 'must not be empty';
      return `must be ${sizeLimit(iss.origin, iss.minimum, iss.inclusive, false)}`;
    case 'invalid_value':
      if (iss.input === undefined)
        return `required: send ${iss.values.length === 1 ? JSON.stringify(iss.values[0]) : `one of: ${iss.values.map((v) => JSON.stringify(v)).join(', ')}`}`;
      return iss.values.length === 1
        ? `must be ${JSON.stringify(iss.values[0])}`
        : `must be one of: ${iss.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'unrecognized_keys':
      return `unknown ${iss.keys.length === 1 ? 'field' : 'fields'} ${iss.keys.map((k) => `'${k}'`).join(', ')}: remove ${iss.keys.length === 1 ? 'it' : 'them'}`;
    case 'invalid_format':
      if (iss.format === 'datetime') return 'must be an ISO 8601 date-time with an offset, e.g. 2026-12-01T09:00:00Z';
      if (iss.format === 'url') return 'must be a URL';
      if (iss.format === 'email') return 'must be an email address';
      return `must be a valid ${iss.format}`;
    case 'not_multiple_of':
      return `must be a multiple of ${iss.divisor}`;
    case 'invalid_union': {
      const inst = iss.inst as Schema | undefined;
      const accepted = inst ? describeSchema(inst) : undefined;
      const disc = (iss as { discriminator?: string }).discriminator;
      if (disc && inst) {
        const options = (inst._zod.def as unknown as { options: Schema[] }).options;
        const values = options.flatMap((o) => {
          const f = (o._zod.def as { shape?: Record<string, Schema> }).shape?.[disc];
          return f ? [describeSchema(f)] : [];
        });
        const given = (iss.input as Record<string, unknown> | undefined)?.[disc];
        return given === undefined
          ? `required: send one of: ${values.join(', ')}`
          : `'${disc}' must be one of: ${values.join(', ')}`;
      }
      return accepted ? `must be one of: ${accepted}` : undefined;
    }
    default:
      return undefined;
  }
}

z.config({ customError: message });

export interface FieldIssue {
  path: (string | number)[];
  message: string;
}

/**
 * zod's issues as one entry per field: a union that matched none of its shapes points at the field that failed in
 * the shape that came closest (fewest issues), and says which shapes the union accepts.
 */
export function fieldIssues(issues: readonly z.core.$ZodIssue[], prefix: (string | number)[] = []): FieldIssue[] {
  const out: FieldIssue[] = [];
  for (const i of issues) {
    const path = [...prefix, ...i.path.map((p) => (typeof p === 'symbol' ? String(p) : p))];
    if (i.code === 'invalid_union' && i.errors.length > 0) {
      // Fewest issues wins; on a tie, the shape whose type matched (its issues are inside it, not about its type).
      const score = (alt: readonly z.core.$ZodIssue[]) =>
        alt.length + (alt.some((x) => x.path.length === 0 && x.code === 'invalid_type') ? 0.5 : 0);
      const closest = [...i.errors].sort((a, b) => score(a) - score(b))[0];
      const accepted = i.message.startsWith('must be one of: ') ? i.message.slice('must be one of: '.length) : '';
      for (const inner of fieldIssues(closest, path))
        out.push({ ...inner, message: accepted ? `${inner.message} (accepted here: ${accepted})` : inner.message });
      continue;
    }
    out.push({ path, message: i.message });
  }
  return out;
}
