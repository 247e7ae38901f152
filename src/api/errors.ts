// RFC 9457 problem details: the only error shape the API speaks.
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { ZodError, type z } from 'zod';
import { fieldIssues } from '../validation.js';

export interface FieldError {
  path: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  errors?: FieldError[];
  [extra: string]: unknown;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** An error that becomes a problem response. Throw it anywhere in a handler. */
export class ProblemError extends HTTPException {
  constructor(
    status: ContentfulStatusCode,
    readonly slug: string,
    detail: string,
    readonly extra: Partial<Problem> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(status, { message: detail });
  }
}

export const problem = {
  badRequest: (detail: string, errors?: FieldError[]) =>
    new ProblemError(400, 'bad-request', detail, errors ? { errors } : {}),
  validation: (errors: FieldError[], detail = 'The request is not valid.') =>
    new ProblemError(400, 'validation', detail, { errors }),
  unauthorized: (detail = 'A valid API key is required.') =>
    new ProblemError(
      401,
      'unauthorized',
      detail,
      {},
      { 'WWW-Authenticate': 'Bearer realm="movie-jobs", Basic realm="movie-jobs"' },
    ),
  forbidden: (detail: string) => new ProblemError(403, 'forbidden', detail),
  notFound: (what = 'resource') => new ProblemError(404, 'not-found', `No such ${what}.`),
  conflict: (detail: string, extra: Partial<Problem> = {}) => new ProblemError(409, 'conflict', detail, extra),
  tooLarge: (detail: string) => new ProblemError(413, 'too-large', detail),
  unprocessable: (slug: string, detail: string, extra: Partial<Problem> = {}) =>
    new ProblemError(422, slug, detail, extra),
  unavailable: (detail: string) => new ProblemError(503, 'unavailable', detail, {}, { 'Retry-After': '5' }),
};

export function fieldErrors(err: z.ZodError | ZodError, prefix: (string | number)[] = []): FieldError[] {
  return fieldIssues(err.issues, prefix).map((i) => ({
    path: i.path.map(String).join('.') || '(body)',
    message: i.message,
  }));
}

export function problemResponse(
  c: Context,
  status: number,
  p: Omit<Problem, 'status' | 'title' | 'type'> & { slug: string; title?: string },
  headers: Record<string, string> = {},
) {
  const { slug, title, ...rest } = p;
  const body: Problem = {
    type: `https://movie-jobs.dev/problems/${slug}`,
    title: title ?? TITLES[status] ?? 'Error',
    status,
    ...rest,
  };
  return c.body(JSON.stringify(body), status as ContentfulStatusCode, {
    'Content-Type': 'application/problem+json',
    ...headers,
  });
}

export function isZodError(err: unknown): err is ZodError {
  return err instanceof ZodError;
}
