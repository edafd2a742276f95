// Checks answers against the daemon's /openapi.json: status, content type and body (JSON with
// ajv, NDJSON line by line). test/helpers/daemon.ts runs every answer a test daemon gives through
// this, so a handler that drifts from src/daemon/http/responses.ts fails the e2e tests.
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { ERROR_STATUS, type ErrorCode } from '../../src/errors.ts';

interface MediaType { schema?: unknown }
interface ResponseObject { content?: Record<string, MediaType> }
interface OpenApi { paths: Record<string, Record<string, { responses: Record<string, ResponseObject> }>>; components: { schemas: Record<string, unknown> } }

/** What one answer is checked as: its JSON body or NDJSON lines are then fed to check(). */
export interface Expectation {
  route: string;
  status: number;
  /** null: no body expected (204, HEAD). */
  body: { kind: 'json' | 'ndjson'; validate: ValidateFunction } | { kind: 'opaque' } | null;
}

const DOC_ID = 'emberd-openapi';

/** Other APIs the daemon serves, in their own shapes and outside its document (src/e2b/routes.ts:
 * the E2B-compatible API under /e2b, and its signed /files URLs). */
function notInDocument(u: URL): boolean {
  return u.pathname === '/e2b' || u.pathname.startsWith('/e2b/') || (u.pathname === '/files' && u.searchParams.has('signature'));
}

export class ResponseChecker {
  private readonly ajv: Ajv2020;
  private readonly routes: { method: string; template: string; re: RegExp; literal: number; responses: Record<string, ResponseObject> }[] = [];
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(doc: OpenApi) {
    this.ajv = new Ajv2020({ strict: false, allErrors: false });
    // The document as one schema resource, so "#/components/schemas/X" refs resolve inside it.
    this.ajv.addSchema({ $id: DOC_ID, components: doc.components }, DOC_ID);
    for (const [template, item] of Object.entries(doc.paths)) {
      // {param} is one segment; a trailing /* (the proxied ports) is any rest of the path.
      const re = new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{\w+\\?\}/g, '[^/]+').replace(/\\\*$/, '.*')}$`);
      for (const [method, op] of Object.entries(item)) {
        this.routes.push({ method: method.toUpperCase(), template, re, literal: template.replace(/\{\w+\}/g, '').length, responses: op.responses });
      }
    }
    // A literal segment wins over a parameter (none overlap today; this keeps it so).
    this.routes.sort((a, b) => b.literal - a.literal);
  }

  /** What the answer to `method url` with `status` and `contentType` must be; throws a mismatch. */
  expect(method: string, url: string, status: number, contentType: string | null): Expectation {
    const parsed = new URL(url);
    if (notInDocument(parsed)) return { route: `${method} ${parsed.pathname} (not emberd's API)`, status, body: { kind: 'opaque' } };
    const path = parsed.pathname;
    const m = method.toUpperCase() === 'HEAD' ? 'GET' : method.toUpperCase();
    const op = this.routes.find((r) => r.method === m && r.re.test(path));
    const route = op ? `${m} ${op.template}` : `${m} ${path} (no such route)`;
    const head = method.toUpperCase() === 'HEAD';
    if (!op) {
      // Not a documented route: the router's 404 (or the 401 before it), an Error.
      return { route, status, body: head ? null : { kind: 'json', validate: this.errorValidator(route, status, contentType) } };
    }
    const key = String(status);
    const ownProtocol = !!op.responses.default?.content?.['*/*']; // MCP: any status, its own format
    const response = op.responses[key] ?? (status >= 400 || ownProtocol ? op.responses.default : undefined);
    if (!response) throw new Error(`${route} answered ${status}, a status its responses do not list (${Object.keys(op.responses).join(', ')})`);
    if (status >= 400 && !op.responses[key] && !ownProtocol) {
      throw new Error(`${route} answered ${status}, an error status its responses do not list (${Object.keys(op.responses).join(', ')}): add it in src/daemon/http/responses.ts`);
    }
    const content = response.content;
    if (!content) {
      if (contentType) throw new Error(`${route} ${status}: the document says no body, the answer has Content-Type ${contentType}`);
      return { route, status, body: null };
    }
    if (content['*/*']) return { route, status, body: { kind: 'opaque' } };
    const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
    const media = content[type];
    if (!media) throw new Error(`${route} ${status}: Content-Type ${contentType ?? '(none)'} is not one the document lists (${Object.keys(content).join(', ')})`);
    if (head) return { route, status, body: null };
    const kind = type === 'application/json' ? 'json' : type === 'application/x-ndjson' ? 'ndjson' : undefined;
    if (!kind) return { route, status, body: { kind: 'opaque' } };
    const pointer = `${op.template}|${m.toLowerCase()}|${key in op.responses ? key : 'default'}|${type}`;
    let validate = this.validators.get(pointer);
    if (!validate) {
      validate = this.ajv.compile(refsInDoc(media.schema) as object);
      this.validators.set(pointer, validate);
    }
    return { route, status, body: { kind, validate } };
  }

  /** undefined when `value` (a JSON body, or one NDJSON line) fits; else what is wrong. */
  check(e: Expectation, value: unknown): string | undefined {
    if (!e.body || e.body.kind === 'opaque') return undefined;
    if (!e.body.validate(value)) {
      const err = e.body.validate.errors?.[0];
      return `${e.route} ${e.status}: ${e.body.kind === 'ndjson' ? 'a line' : 'the body'} does not match the document: ${err ? `${err.instancePath || '(root)'} ${err.message} ${JSON.stringify(err.params)}` : 'invalid'}; got ${JSON.stringify(value).slice(0, 500)}`;
    }
    // An error's code belongs to its status (src/errors.ts), whichever response described it.
    const code = (value as { error?: { code?: string } })?.error?.code;
    if (e.status >= 400 && code !== undefined && ERROR_STATUS[code as ErrorCode] !== e.status) {
      return `${e.route} ${e.status}: error code ${code} has status ${ERROR_STATUS[code as ErrorCode]} in src/errors.ts`;
    }
    return undefined;
  }

  private errorValidator(route: string, status: number, contentType: string | null): ValidateFunction {
    if (!/^application\/json\b/i.test(contentType ?? '')) throw new Error(`${route} ${status}: an error must be JSON, got Content-Type ${contentType ?? '(none)'}`);
    let v = this.validators.get('Error');
    if (!v) { v = this.ajv.compile({ $ref: `${DOC_ID}#/components/schemas/Error` }); this.validators.set('Error', v); }
    return v;
  }
}

/** A schema from the document with its "#/..." refs pointed into the document resource. */
function refsInDoc(schema: unknown): unknown {
  return JSON.parse(JSON.stringify(schema ?? {}), (k, v) => (k === '$ref' && typeof v === 'string' && v.startsWith('#') ? `${DOC_ID}${v}` : v));
}

/** Splits an NDJSON byte stream into lines, checking each; at the end, the last must be complete. */
export class NdjsonLines {
  private rest = '';
  private readonly decoder = new TextDecoder();
  private readonly onLine: (line: string) => void;
  constructor(onLine: (line: string) => void) {
    this.onLine = onLine;
  }

  push(chunk: Uint8Array): void {
    this.rest += this.decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = this.rest.indexOf('\n')) >= 0) {
      const line = this.rest.slice(0, nl);
      this.rest = this.rest.slice(nl + 1);
      if (line.trim()) this.onLine(line);
    }
  }

  /** What is left unterminated at the end (a truncated line), or ''. */
  end(): string {
    this.rest += this.decoder.decode();
    return this.rest.trim();
  }
}
