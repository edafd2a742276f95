// Turns an untrusted body into a typed command input, or a 400 that says what to fix.
import type { z } from 'zod';
import { EmberdError } from '../../errors.ts';

export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const where = i.path.length ? i.path.join('.') : 'body';
    return `${where}: ${i.message}`;
  });
  throw new EmberdError('INVALID_REQUEST', `invalid request body: ${problems.join('; ')}`);
}
