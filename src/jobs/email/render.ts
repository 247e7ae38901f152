// Email templates: files under ./templates rendered with eta. HTML output escapes every interpolation (autoEscape);
// text output is plain text and is not HTML-escaped. Each template's variables have a strict schema, checked when the
// job is submitted, so a job that reaches a worker always renders.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Eta } from 'eta';
import { z } from 'zod';

const TEMPLATES = ['welcome', 'recommendations', 'report_ready', 'plain'] as const;
export type TemplateName = (typeof TEMPLATES)[number];

const singleLine = (max: number) =>
  z
    .string()
    .trim()
    .min(1)
    .max(max)
    .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must be one line without control characters');
const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2048);

export const recommendationItem = z.object({
  movie_id: z.string().max(128).optional(),
  title: singleLine(300),
  score: z.number().finite(),
});
export type RecommendationItem = z.infer<typeof recommendationItem>;

/** Variables each template accepts in `data`. */
export const templateData = {
  welcome: z.strictObject({ name: singleLine(100).optional(), app_url: httpUrl.optional() }),
  recommendations: z
    .strictObject({
      user_id: z.string().trim().min(1).max(128).optional(),
      name: singleLine(100).optional(),
      items: z.array(recommendationItem.strict()).max(100).optional(),
    })
    .refine(
      (d) => d.user_id !== undefined || d.items !== undefined,
      'give data.user_id (latest stored recommendations) or data.items',
    ),
  report_ready: z
    .strictObject({
      file_id: z
        .string()
        .regex(/^file_[A-Za-z0-9_-]{10,64}$/, 'must be a file id (file_…)')
        .optional(),
      url: httpUrl.optional(),
      report: singleLine(60).optional(),
      name: singleLine(100).optional(),
    })
    .refine((d) => d.file_id !== undefined || d.url !== undefined, 'give data.file_id or data.url'),
  plain: z.strictObject({}),
} satisfies Record<TemplateName, z.ZodType>;

export const DEFAULT_SUBJECT: Record<TemplateName, string> = {
  welcome: 'Welcome to Movie Jobs',
  recommendations: 'Your movie recommendations',
  report_ready: 'Your report is ready',
  plain: '',
};

const here = path.dirname(fileURLToPath(import.meta.url));
// Under tsx the templates sit next to this file; a compiled build (dist/src/jobs/email) reads them from the
// source tree.
const VIEWS =
  [path.join(here, 'templates'), path.resolve(here, '../../../../src/jobs/email/templates')].find((d) =>
    existsSync(d),
  ) ?? path.join(here, 'templates');

const html = new Eta({ views: VIEWS, autoEscape: true, cache: true });
const text = new Eta({ views: VIEWS, autoEscape: false, autoTrim: false, cache: true });

export interface Rendered {
  subject: string;
  text: string;
  html: string;
}

/** `vars` are the template's variables (already validated) plus `subject`, `note` and `product`. */
export function render(template: TemplateName, vars: Record<string, unknown> & { subject: string }): Rendered {
  const it = { product: 'Movie Jobs', ...vars };
  return {
    subject: vars.subject,
    text: `${text.render(`./${template}.txt.eta`, it).trim()}\n`,
    html: html.render(`./${template}.html.eta`, it),
  };
}

/** Blank-line separated paragraphs of a plain-text body, for the HTML part. */
export function paragraphs(body: string): string[] {
  return body
    .replace(/\r\n?/g, '\n')
    .split(/\n{2,}/)
    .map((p) => p.trim())
    .filter(Boolean);
}
