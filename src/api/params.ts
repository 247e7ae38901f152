import { z } from '@hono/zod-openapi';
import { problem } from './errors.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Ids are opaque to clients: a malformed one is simply not found (and never reaches a query). */
export const JobIdParam = z.object({
  id: z.string().openapi({ param: { name: 'id', in: 'path' }, example: '019a8f1e-7c3a-7b2e-9d41-2f6a0c8e5b13' }),
});

export function assertUuid(id: string, what = 'job'): string {
  if (!UUID.test(id)) throw problem.notFound(what);
  return id.toLowerCase();
}

export const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(200).optional(),
});

export function encodeCursor(value: string): string {
  return Buffer.from(value, 'utf8').toString('base64url');
}

/** Cursors are opaque too; one we did not issue is a 400. */
export function decodeCursor(cursor: string, valid: RegExp = UUID): string {
  const value = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!valid.test(value))
    throw problem.badRequest('The cursor is not valid.', [{ path: 'cursor', message: 'not a cursor this API issued' }]);
  return value;
}
