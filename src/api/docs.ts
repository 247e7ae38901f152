// The interactive reference at /docs (Scalar), served entirely from this process: the page, its script (the
// standalone bundle of the installed @scalar/api-reference) and the OpenAPI document. No request leaves the machine,
// so the reference works offline and behind a firewall.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Scalar } from '@scalar/hono-api-reference';
import { Hono } from 'hono';

const DOCS_PATH = '/docs';
const BUNDLE_PATH = `${DOCS_PATH}/scalar.js`;
const bundleFile = createRequire(import.meta.url).resolve('@scalar/api-reference/browser/standalone.js');
let bundle: Promise<Buffer> | undefined;

export function docsRoutes() {
  const app = new Hono();
  app.get(
    DOCS_PATH,
    Scalar({
      url: '/openapi.json',
      pageTitle: 'movie-jobs API',
      cdn: BUNDLE_PATH,
      // Scalar's default fonts come from fonts.scalar.com; the system fonts need no network.
      withDefaultFonts: false,
      telemetry: false,
      // The AI agent panel searches a registry at api.scalar.com: off, it needs the internet.
      agent: { disabled: true },
    }),
  );
  app.get(BUNDLE_PATH, async (c) => {
    bundle ??= readFile(bundleFile);
    return c.body(new Uint8Array(await bundle), 200, {
      'Content-Type': 'text/javascript; charset=utf-8',
      'Cache-Control': 'public, max-age=3600',
    });
  });
  return app;
}
