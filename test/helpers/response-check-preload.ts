// Loaded into every test daemon (node --import, test/helpers/daemon.ts): checks each answer the
// daemon writes against its OpenAPI document, whoever asked (the test's fetch, emberctl, the Python
// SDK, an MCP host, a raw socket), and appends each mismatch as a line to the file named by
// EMBERD_TEST_RESPONSE_CHECK; the helper's stop() fails on any. Only the first bytes decide the
// status and content type; JSON bodies are kept until end() (they are small), NDJSON is checked
// line by line, downloads are not held at all.
import { ServerResponse, type IncomingMessage } from 'node:http';
import { appendFileSync } from 'node:fs';
import { openApiDocument } from '../../src/daemon/http/openapi.ts';
import { NdjsonLines, ResponseChecker, type Expectation } from './response-check.ts';

const out = process.env.EMBERD_TEST_RESPONSE_CHECK;

interface Seen {
  e?: Expectation;
  json?: Buffer[];
  lines?: NdjsonLines;
  done?: boolean;
  /** What writeHead was given (Fastify passes its headers there, not through setHeader). */
  head?: { status: number; contentType: string | null };
}

if (out) {
  const checker = new ResponseChecker(JSON.parse(JSON.stringify(openApiDocument())));
  const seen = new WeakMap<ServerResponse, Seen>();
  const record = (m: string) => appendFileSync(out, `${m.replace(/\n/g, ' ')}\n`);

  const contentTypeOf = (headers: unknown): string | null | undefined => {
    if (Array.isArray(headers)) { // raw [name, value, name, value, ...] or [[name, value], ...]
      const flat = headers.flat() as unknown[];
      for (let i = 0; i + 1 < flat.length; i += 2) if (String(flat[i]).toLowerCase() === 'content-type') return String(flat[i + 1]);
      return undefined;
    }
    if (headers && typeof headers === 'object') {
      for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === 'content-type' && v !== undefined) return String(v);
    }
    return undefined;
  };

  const start = (res: ServerResponse): Seen => {
    let s = seen.get(res);
    if (s?.e || s?.done) return s;
    s ??= {};
    seen.set(res, s);
    const req = res.req as IncomingMessage | undefined;
    if (!req?.url?.startsWith('/')) { s.done = true; return s; }
    const status = s.head?.status ?? res.statusCode;
    const type = s.head?.contentType ?? (res.getHeader('content-type') as string | undefined) ?? null;
    try {
      s.e = checker.expect(req.method ?? 'GET', `http://daemon${req.url}`, status, type);
      if (s.e.body?.kind === 'json') s.json = [];
      else if (s.e.body?.kind === 'ndjson') {
        const e = s.e;
        s.lines = new NdjsonLines((line) => {
          let v: unknown;
          try { v = JSON.parse(line); } catch { record(`${e.route} ${e.status}: a line is not JSON: ${line.slice(0, 200)}`); return; }
          const m = checker.check(e, v);
          if (m) record(m);
        });
      }
    } catch (err) {
      record((err as Error).message);
      s.done = true;
    }
    return s;
  };

  const take = (s: Seen, chunk: unknown, encoding: unknown) => {
    if (s.done || chunk === undefined || chunk === null || typeof chunk === 'function') return;
    const b = typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8') : Buffer.from(chunk as Uint8Array);
    if (s.json) s.json.push(b);
    else s.lines?.push(b);
  };

  const finish = (s: Seen) => {
    if (s.done) return;
    s.done = true;
    const e = s.e;
    if (!e) return;
    if (s.json) {
      const text = Buffer.concat(s.json).toString('utf8');
      let v: unknown;
      try { v = JSON.parse(text); } catch { record(`${e.route} ${e.status}: the body is not JSON: ${text.slice(0, 200)}`); return; }
      const m = checker.check(e, v);
      if (m) record(m);
    } else if (s.lines) {
      const rest = s.lines.end();
      if (rest) record(`${e.route} ${e.status}: the stream ends inside a line: ${rest.slice(0, 200)}`);
    }
  };

  const proto = ServerResponse.prototype as unknown as Record<'writeHead' | 'write' | 'end', (...a: unknown[]) => unknown>;
  const { writeHead, write, end } = proto;
  proto.writeHead = function (this: ServerResponse, status: unknown, ...rest: unknown[]) {
    const headers = typeof rest[0] === 'string' ? rest[1] : rest[0];
    const s = seen.get(this) ?? {};
    s.head = { status: Number(status), contentType: contentTypeOf(headers) ?? null };
    seen.set(this, s);
    return writeHead.call(this, status, ...rest);
  };
  proto.write = function (this: ServerResponse, chunk: unknown, encoding: unknown, ...rest: unknown[]) {
    take(start(this), chunk, encoding);
    return write.call(this, chunk, encoding, ...rest);
  };
  proto.end = function (this: ServerResponse, chunk: unknown, encoding: unknown, ...rest: unknown[]) {
    const s = start(this);
    take(s, chunk, encoding);
    finish(s);
    return end.call(this, chunk, encoding, ...rest);
  };
}
