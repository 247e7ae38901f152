import type { Kysely } from 'kysely';

// jobs.trace_context: the submitting request's trace context (the W3C traceparent carrier as JSON, as BullMQ's
// telemetry stores it in a job's options). Whoever enqueues the job again (the reconciler after Redis lost it, a
// retry) starts its run in that trace. Null when tracing was off at submission. Adding a nullable column with no
// default rewrites nothing.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('trace_context', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').dropColumn('trace_context').execute();
}
