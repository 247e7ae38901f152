// Schedule definitions (the rules; BullMQ's job schedulers fire them, see src/schedules/index.ts).
import { sql } from 'kysely';
import type { Db } from './index.js';
import type { Priority } from '../domain.js';
import type { ScheduleRow } from './types.js';

export async function listSchedules(db: Db): Promise<ScheduleRow[]> {
  return db.selectFrom('schedules').selectAll().orderBy('name').execute();
}

export async function findSchedule(db: Db, name: string): Promise<ScheduleRow | undefined> {
  return db.selectFrom('schedules').selectAll().where('name', '=', name).executeTakeFirst();
}

export async function saveSchedule(
  db: Db,
  s: {
    name: string;
    tenant: string;
    type: string;
    payload: unknown;
    priority: Priority;
    cron: string | null;
    every_ms: number | null;
    tz: string | null;
  },
): Promise<{ row: ScheduleRow; created: boolean }> {
  const values = { ...s, payload: JSON.stringify(s.payload) };
  const row = await db
    .insertInto('schedules')
    .values(values)
    .onConflict((oc) => oc.column('name').doUpdateSet({ ...values, updated_at: sql<Date>`now()` }))
    // xmax = 0 only for a freshly inserted row.
    .returning(sql<boolean>`(xmax = 0)`.as('created'))
    .returningAll()
    .executeTakeFirstOrThrow();
  const { created, ...rest } = row as ScheduleRow & { created: boolean };
  return { row: rest, created };
}

export async function deleteSchedule(db: Db, name: string): Promise<ScheduleRow | undefined> {
  return db.deleteFrom('schedules').where('name', '=', name).returningAll().executeTakeFirst();
}
