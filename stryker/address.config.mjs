import { moduleConfig } from './module.mjs';

export default moduleConfig('mail-address', ['src/mail/address.ts'], ['test/mail-address.test.ts'], { setup: false });
