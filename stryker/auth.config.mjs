import { moduleConfig } from './module.mjs';

// Key handling and the middleware. src/api/auth.ts is gaining the viewer role this round (another engineer): its
// tests belong in test/auth-keys.test.ts too, through the same public functions.
export default moduleConfig(
  'auth',
  ['src/auth/keys.ts', 'src/auth/revocation.ts', 'src/api/auth.ts'],
  ['test/auth-keys.test.ts'],
  { setup: false, testTimeout: 10_000, timeoutMS: 60_000 },
);
