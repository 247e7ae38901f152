// The console's job page shows the trace a job's runs belong to: the id read from its stored trace context.
import { describe, expect, it } from 'vitest';
import { traceIdOf } from '../src/tracing/index.js';

describe('traceIdOf', () => {
  it('reads the trace id of a stored W3C traceparent, and nothing from what is not one', () => {
    const id = '4bf92f3577b34da6a3ce929d0e0e4736';
    expect(traceIdOf(JSON.stringify({ traceparent: `00-${id}-00f067aa0ba902b7-01` }))).toBe(id);
    expect(traceIdOf(null)).toBeUndefined();
    expect(traceIdOf('')).toBeUndefined();
    expect(traceIdOf('not json')).toBeUndefined();
    expect(traceIdOf(JSON.stringify({ traceparent: '00-XYZ-00f067aa0ba902b7-01' }))).toBeUndefined();
    expect(traceIdOf(JSON.stringify({ other: 1 }))).toBeUndefined();
  });
});
