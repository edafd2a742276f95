// Turns an untrusted body or query string into a typed command input, or a 400 that says which
// part of the request was wrong and what to fix.
import type { z } from 'zod';
import { EmberdError } from '../../errors.ts';

export type RequestPart = 'body' | 'query';

const WHERE: Record<RequestPart, string> = { body: 'request body', query: 'query string' };

/** `hint`, when given, ends the message: what the valid inputs are. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, part: RequestPart, hint?: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : part}: ${i.message}`);
  throw new EmberdError('INVALID_REQUEST', `invalid ${WHERE[part]}: ${problems.join('; ')}${hint ? `; ${hint}` : ''}`);
}

export const parseBody = <S extends z.ZodType>(schema: S, body: unknown, hint?: string): z.infer<S> => parseInput(schema, body, 'body', hint);
export const parseQuery = <S extends z.ZodType>(schema: S, query: unknown, hint?: string): z.infer<S> => parseInput(schema, query, 'query', hint);
