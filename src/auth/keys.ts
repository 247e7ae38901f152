// Tenants and API keys. A key is shown once, at creation; only its HMAC is stored.
import { createHmac, randomBytes } from 'node:crypto';
import type { Db } from '../db/index.js';
import { activeKeyBy, insertKey, insertTenant } from '../db/tenants.js';
import type { Role } from '../domain.js';

export const TENANT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function hashKey(secret: string, key: string): string {
  return createHmac('sha256', secret).update(key).digest('base64url');
}

export async function createTenant(db: Db, name: string): Promise<{ tenant: string; webhook_secret: string }> {
  if (!TENANT_NAME.test(name)) throw new Error(`tenant name must match ${TENANT_NAME}`);
  // Standard Webhooks secrets are "whsec_" + base64 of the key bytes.
  const webhook_secret = `whsec_${randomBytes(24).toString('base64')}`;
  await insertTenant(db, name, webhook_secret);
  return { tenant: name, webhook_secret };
}

/** What createKey hands out: `mj_` and 32 random bytes in base64url. Anything else is unknown without a lookup. */
export const KEY_FORMAT = /^mj_[A-Za-z0-9_-]{43}$/;

export async function createKey(db: Db, secret: string, tenant: string, role: Role) {
  const id = `key_${randomBytes(9).toString('base64url')}`;
  const key = `mj_${randomBytes(32).toString('base64url')}`;
  await insertKey(db, { id, tenant, role, hash: hashKey(secret, key) });
  return { id, tenant, role, key };
}

export { revokeKey } from '../db/tenants.js';

export interface Principal {
  keyId: string;
  tenant: string;
  role: Role;
}

export async function findPrincipal(db: Db, secret: string, key: string): Promise<Principal | undefined> {
  const row = await activeKeyBy(db, { hash: hashKey(secret, key) });
  return row && { keyId: row.id, tenant: row.tenant, role: row.role };
}

/** The principal of a key by its id, while the key is not revoked (browser sessions hold the id, not the key). */
export async function findPrincipalById(db: Db, keyId: string): Promise<Principal | undefined> {
  const row = await activeKeyBy(db, { id: keyId });
  return row && { keyId: row.id, tenant: row.tenant, role: row.role };
}
