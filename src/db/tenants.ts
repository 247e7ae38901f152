// Tenants and their API keys: rows only. Naming rules, key formats and hashing live in src/auth/keys.ts.
import type { Db } from './index.js';
import type { Role } from '../domain.js';

export async function insertTenant(db: Db, id: string, webhook_secret: string): Promise<void> {
  await db.insertInto('tenants').values({ id, webhook_secret }).execute();
}

export async function tenantExists(db: Db, id: string): Promise<boolean> {
  return (await db.selectFrom('tenants').select('id').where('id', '=', id).executeTakeFirst()) !== undefined;
}

/** The tenant's webhook signing secret; undefined for a tenant that does not exist. */
export async function webhookSecretOf(db: Db, tenant: string): Promise<string | undefined> {
  const row = await db.selectFrom('tenants').select('webhook_secret').where('id', '=', tenant).executeTakeFirst();
  return row?.webhook_secret;
}

export async function insertKey(db: Db, key: { id: string; tenant: string; role: Role; hash: string }): Promise<void> {
  await db.insertInto('api_keys').values(key).execute();
}

/** Revokes a key that is still active; false when there is none by that id. */
export async function revokeKey(db: Db, id: string): Promise<boolean> {
  const r = await db
    .updateTable('api_keys')
    .set({ revoked_at: new Date() })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export interface KeyOwner {
  id: string;
  tenant: string;
  role: Role;
}

/** The active (not revoked) key with this hash, or by this id. */
export async function activeKeyBy(db: Db, by: { hash: string } | { id: string }): Promise<KeyOwner | undefined> {
  const q = db.selectFrom('api_keys').select(['id', 'tenant', 'role']).where('revoked_at', 'is', null);
  return ('hash' in by ? q.where('hash', '=', by.hash) : q.where('id', '=', by.id)).executeTakeFirst();
}
