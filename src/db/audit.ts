// The audit log: operator actions on queues, jobs and schedules, newest first.
import type { Kysely, Transaction } from 'kysely';
import { newId } from '../ids.js';
import type { Principal } from '../auth/keys.js';
import type { AuditSurface, AuditTargetKind } from '../domain.js';
import type { AuditRow, Database } from './types.js';

type Q = Kysely<Database> | Transaction<Database>;

export interface AuditEntry {
  actor: Principal | undefined;
  action: string;
  target_kind: AuditTargetKind;
  target: string;
  detail?: unknown;
  /** From where: the surface that carried the action out, and the client's address if it came over HTTP. */
  surface?: AuditSurface;
  client_addr?: string | null;
}

/** The public shape (docs/api.md "Operators", GET /v1/audit). */
export interface ApiAudit {
  id: string;
  at: string;
  actor: { key_id: string | null; tenant: string | null; role: string | null };
  action: string;
  target_kind: AuditTargetKind;
  target: string;
  detail: unknown;
  surface: AuditSurface | null;
  client_addr: string | null;
}

export async function recordAudit(db: Q, e: AuditEntry): Promise<AuditRow> {
  return db
    .insertInto('audit_log')
    .values({
      id: newId(),
      actor_key_id: e.actor?.keyId ?? null,
      actor_tenant: e.actor?.tenant ?? null,
      actor_role: e.actor?.role ?? null,
      action: e.action,
      target_kind: e.target_kind,
      target: e.target,
      detail: e.detail === undefined ? null : JSON.stringify(e.detail),
      surface: e.surface ?? null,
      client_addr: e.client_addr ?? null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export interface AuditFilter {
  before?: string;
  limit: number;
  target_kind?: AuditTargetKind;
  target?: string;
  action?: string;
}

/** Newest first; keyset pagination on the UUIDv7 id. */
export async function listAudit(db: Q, f: AuditFilter): Promise<AuditRow[]> {
  let q = db.selectFrom('audit_log').selectAll();
  if (f.before) q = q.where('id', '<', f.before);
  if (f.target_kind) q = q.where('target_kind', '=', f.target_kind);
  if (f.target) q = q.where('target', '=', f.target);
  if (f.action) q = q.where('action', '=', f.action);
  return q.orderBy('id', 'desc').limit(f.limit).execute();
}

export function toApiAudit(r: AuditRow): ApiAudit {
  return {
    id: r.id,
    at: r.at.toISOString(),
    actor: { key_id: r.actor_key_id, tenant: r.actor_tenant, role: r.actor_role },
    action: r.action,
    target_kind: r.target_kind,
    target: r.target,
    detail: r.detail ?? null,
    surface: r.surface,
    client_addr: r.client_addr,
  };
}

/** The entries about one job (cancels and retries from the API, the console or the dashboard), newest first. */
export async function jobAudit(db: Q, jobId: string, limit = 200): Promise<AuditRow[]> {
  return db
    .selectFrom('audit_log')
    .selectAll()
    .where('target_kind', '=', 'job')
    .where('target', '=', jobId)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}
