import { OpenAPIHono, z } from '@hono/zod-openapi';
import type { AuthEnv } from './auth.js';
import { fieldErrors, problemResponse } from './errors.js';

/** A route group whose validation failures answer 400 problem+json naming each bad field. */
export function router() {
  return new OpenAPIHono<AuthEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const where = result.target === 'json' ? [] : [result.target];
        return problemResponse(c, 400, {
          slug: 'validation',
          detail: 'The request is not valid.',
          errors: fieldErrors(result.error, where),
        });
      }
    },
  });
}

const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string().optional(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  })
  .openapi('Problem');

const problemContent = { 'application/problem+json': { schema: ProblemSchema } };

/** Standard error responses for the OpenAPI document. */
export function problems(...codes: number[]) {
  const descriptions: Record<number, string> = {
    400: 'Invalid request',
    401: 'Missing or bad API key',
    403: 'Not allowed for this role',
    404: 'Not found',
    409: 'Conflict with the current state',
    413: 'Body too large',
    422: 'Valid but not processable',
    429: 'Rate limited',
    503: 'A dependency is down',
  };
  return Object.fromEntries(
    codes.map((c) => [c, { description: descriptions[c] ?? 'Error', content: problemContent }]),
  );
}

export const security = [{ bearer: [] as string[] }];
