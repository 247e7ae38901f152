// Input the schemas let through but PostgreSQL cannot store (a NUL character in text or jsonb, a number or date out
// of the column's range) is still the client's input: it answers 400, never 500.

/** PostgreSQL's class 22, "data exception": the value, not the server, is at fault. */
export function isDataException(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code);
}
