// Raw Node HTTP helpers for the E2B surfaces, which answer in E2B's shapes (errors are
// `{code: <HTTP status>, message}`), not emberd's.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EmberdError, isEmberdError } from '../errors.ts';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers }).end(text);
}

/** An error as E2B's API and envd answer it: the status, and `{code: status, message}`. */
export function sendError(res: ServerResponse, e: unknown): void {
  const err = isEmberdError(e) ? e : new EmberdError('INTERNAL', `internal error: ${(e as Error).message}; this is a bug in emberd, please report it`);
  if (res.headersSent) { res.destroy(err); return; }
  const headers: Record<string, string> = {};
  if (err.retryAfterS !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(err.retryAfterS)));
  sendJson(res, err.status, { code: err.status, message: err.message, emberd_code: err.code }, headers);
}

/** The request body, at most `max` bytes (BODY_TOO_LARGE beyond). */
export async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) throw new EmberdError('BODY_TOO_LARGE', `the request body is larger than ${max} bytes; send less`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** A JSON object body ({} when empty); INVALID_JSON otherwise. */
export async function readJson(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  const text = (await readBody(req, max)).toString().trim();
  if (!text) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new EmberdError('INVALID_JSON', `the request body is not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new EmberdError('INVALID_REQUEST', 'the request body must be a JSON object');
  return v as Record<string, unknown>;
}

/** A string -> string map field, or INVALID_REQUEST naming it. */
export function stringMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw new EmberdError('INVALID_REQUEST', `${field} must be an object of string values`);
  }
  return v as Record<string, string>;
}
