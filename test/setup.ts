// Loaded before every test file: @hono/zod-openapi must extend zod before any schema is built (zod 4 gives each
// schema its methods at construction), exactly as src/api/server.ts does first thing.
import '@hono/zod-openapi';
