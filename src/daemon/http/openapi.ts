// The HTTP API as an OpenAPI 3.1 document, served at GET /openapi.json. Request bodies and query
// strings are generated from the same zod schemas the routes parse with, responses from the zod
// schemas of responses.ts (which type the handlers' answers); a test checks that this table and the
// server's routes are the same set, and the e2e tests check every answer against the document.
import { z } from 'zod';
import { VERSION } from '../../version.ts';
import { SCHEMAS, errorBodyFor, responsesOf, type Body, type RouteResponses } from './responses.ts';
import {
  createSandboxBody, deleteFileQuery, execBody, getFileQuery, pathQuery, processOutputQuery, processSignalBody, processStdinBody,
  processWaitQuery, putFileQuery, sandboxTimeoutBody, resumeBody, forkBody, exposePortBody,
} from './schemas.ts';
import { ptyQuery } from './pty-routes.ts';

interface Operation {
  method: 'get' | 'post' | 'put' | 'delete' | 'patch' | 'options';
  path: string;
  summary: string;
  body?: z.ZodType;
  rawBody?: boolean;
  query?: z.ZodObject;
  /** The success status (all of them, with their bodies: responses.ts). */
  ok: number;
}

export const OPERATIONS: Operation[] = [
  { method: 'get', path: '/', summary: 'Daemon info: version, backend and why it was chosen, packs, snapshots, pool', ok: 200 },
  { method: 'get', path: '/openapi.json', summary: 'This document', ok: 200 },
  { method: 'get', path: '/metrics', summary: 'Prometheus metrics, text format (docs/metrics.md)', ok: 200 },
  { method: 'get', path: '/packs', summary: 'Language packs: description, size, sha256, interpreter, snapshot state; broken ones with the reason', ok: 200 },
  { method: 'post', path: '/sandboxes', summary: 'Boot a sandbox; answers once the guest serves', body: createSandboxBody, ok: 201 },
  { method: 'get', path: '/sandboxes', summary: 'List sandboxes', ok: 200 },
  { method: 'get', path: '/sandboxes/{id}', summary: 'One sandbox: state, backend, VMM pid, boot log tail', ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}', summary: 'Destroy a sandbox', ok: 204 },
  { method: 'post', path: '/sandboxes/{id}/pause', summary: 'Save the whole sandbox to disk and stop its VM (docs/api.md "Pause, resume, fork")', ok: 200 },
  { method: 'post', path: '/sandboxes/{id}/resume', summary: 'Bring a paused sandbox back as it was', body: resumeBody, ok: 200 },
  { method: 'post', path: '/sandboxes/{id}/fork', summary: 'New sandboxes from this one\'s state at this moment', body: forkBody, ok: 201 },
  { method: 'post', path: '/sandboxes/{id}/timeout', summary: 'Reset the sandbox\'s deadline to now + timeout_s', body: sandboxTimeoutBody, ok: 200 },
  { method: 'post', path: '/sandboxes/{id}/exec', summary: 'Run code or a program (buffered, NDJSON-streamed, in a session, or in the background)', body: execBody, ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/processes', summary: 'List background processes', ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/processes/{pid}', summary: 'One background process', ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/processes/{pid}/output', summary: 'Buffered output from an offset', query: processOutputQuery, ok: 200 },
  { method: 'post', path: '/sandboxes/{id}/processes/{pid}/stdin', summary: 'Write to or close stdin', body: processStdinBody, ok: 204 },
  { method: 'post', path: '/sandboxes/{id}/processes/{pid}/signal', summary: 'Signal the process group', body: processSignalBody, ok: 204 },
  { method: 'get', path: '/sandboxes/{id}/processes/{pid}/wait', summary: 'Wait for exit, up to timeout_ms', query: processWaitQuery, ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}/processes/{pid}', summary: 'Kill if running, and forget', ok: 204 },
  { method: 'put', path: '/sandboxes/{id}/files', summary: 'Upload a file (raw body), or a tar stream into a directory', query: putFileQuery, rawBody: true, ok: 201 },
  { method: 'get', path: '/sandboxes/{id}/files', summary: 'Download a file, or a directory as tar', query: getFileQuery, ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}/files', summary: 'Delete a file or directory', query: deleteFileQuery, ok: 204 },
  { method: 'get', path: '/sandboxes/{id}/files/stat', summary: 'Stat a path', query: pathQuery, ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/files/list', summary: 'List a directory', query: pathQuery, ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/pty', summary: 'Interactive terminal over a WebSocket: binary messages are terminal bytes, text messages JSON control (docs/api.md "PTY")', query: ptyQuery, ok: 101 },
  { method: 'post', path: '/sandboxes/{id}/ports', summary: 'Expose a TCP port of the sandbox through the daemon, without a network device (docs/network.md "Ports")', body: exposePortBody, ok: 201 },
  { method: 'get', path: '/sandboxes/{id}/ports', summary: 'List exposed ports', ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/ports/{port}', summary: 'One exposed port: its path, listener, counters', ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}/ports/{port}', summary: 'Close an exposed port and its connections', ok: 204 },
  ...(['get', 'post', 'put', 'delete', 'patch', 'options'] as const).map((method) => ({
    method, path: '/sandboxes/{id}/ports/{port}/*', summary: 'HTTP and WebSockets proxied to the port in the sandbox (the rest of the path and the query go to its server)', ok: 200,
  })),
  { method: 'get', path: '/sandboxes/{id}/sessions', summary: 'List interpreter sessions', ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}/sessions/{name}', summary: 'End a session', ok: 204 },
  { method: 'post', path: '/mcp', summary: 'MCP over Streamable HTTP (JSON-RPC; both protocol eras; docs/mcp.md)', ok: 200 },
  { method: 'get', path: '/mcp', summary: 'MCP: no standalone stream (stateless server): 405', ok: 405 },
  { method: 'delete', path: '/mcp', summary: 'MCP: no session to end (stateless server): 405', ok: 405 },
];

const jsonSchema = (s: z.ZodType) => z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' });

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/** Statuses every route can answer: 401 when auth is on, 403 without it (a host or origin not on loopback), 500 for a bug in emberd. */
const ALWAYS = [401, 403, 500];
const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'the request is invalid (the message says which part and how to fix it)',
  401: 'auth is on (--auth) and the bearer token is missing or wrong',
  403: 'without auth: the request names a host, or comes from a page, that is not on loopback (HOST_NOT_ALLOWED, ORIGIN_NOT_ALLOWED); for files: the guest refused (permissions)',
  404: 'no such sandbox, process, session, file or route',
  405: 'method not allowed',
  406: 'not acceptable',
  409: 'not in a state to do this (not ready, paused, busy, failed, exited, broken pack, not empty; a saved state that cannot be resumed)',
  413: 'too large (--max-body, --max-upload, the disk)',
  415: 'unsupported media type',
  429: 'a limit is reached (sandboxes, processes, sessions): free some, or retry after Retry-After',
  500: 'emberd failed (a bug, a boot failure, a session that did not start)',
  502: 'the VM or its agent failed',
  503: 'emberd is busy, short of host memory or shutting down: retry after Retry-After',
  504: 'the VM or its agent did not answer in time',
  507: 'the sandbox\'s disk is full, or paused sandboxes fill their budget (--paused-disk-max)',
};
const RETRY_AFTER = { 'Retry-After': { description: 'seconds until a retry may succeed', schema: { type: 'integer', minimum: 1 } } };
const WWW_AUTHENTICATE = { 'WWW-Authenticate': { schema: { type: 'string', const: 'Bearer realm="emberd"' } } };

function content(bodies: Body[]): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  for (const b of bodies) {
    if ('json' in b) out['application/json'] = { schema: ref(schemaName(b.json)) };
    else if ('ndjson' in b) out['application/x-ndjson'] = { schema: { ...ref(schemaName(b.ndjson)), description: 'each line (a JSON object and a newline) is one of these' } };
    else if ('binary' in b) for (const t of b.binary) out[t] = { schema: { type: 'string', contentMediaType: t } };
    else if ('text' in b) out[b.text] = { schema: { type: 'string' } };
    else if ('any' in b) out['*/*'] = {};
  }
  return Object.keys(out).length ? out : undefined;
}

function schemaName(s: z.ZodType): string {
  const name = Object.entries(SCHEMAS).find(([, v]) => v === s)?.[0];
  if (!name) throw new Error('a response schema is not named in responses.ts SCHEMAS');
  return name;
}

function responsesObject(op: Operation, r: RouteResponses | undefined, errorStatuses: Set<number>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!r) return { default: { description: 'undocumented' } };
  // Another protocol's route (MCP): its status per method is the OPERATIONS line's, in its own format.
  if (r.other === 'any' && !r.ok.some((s) => s.status === op.ok)) out[String(op.ok)] = { description: op.summary, content: { '*/*': {} } };
  for (const s of r.ok) {
    const c = content(s.bodies);
    out[String(s.status)] = { description: s.description, ...(c ? { content: c } : {}) };
  }
  for (const status of [...new Set([...r.errors, ...ALWAYS.filter((x) => !r.ownFormat?.includes(x))])].sort((a, b) => a - b)) {
    errorStatuses.add(status);
    out[String(status)] = {
      description: ERROR_DESCRIPTIONS[status] ?? 'error',
      ...(status === 429 || status === 503 ? { headers: RETRY_AFTER } : status === 401 ? { headers: WWW_AUTHENTICATE } : {}),
      content: { 'application/json': { schema: ref(`Error${status}`) } },
    };
  }
  out.default = r.other === 'any'
    ? { description: 'the protocol\'s own answers', content: { '*/*': {} } }
    : { description: 'any other error', content: { 'application/json': { schema: ref('Error') } } };
  return out;
}

/** The named response schemas (responses.ts) and one error schema per status, as JSON Schema. */
function componentSchemas(errorStatuses: Set<number>): Record<string, unknown> {
  const reg = z.registry<{ id: string }>();
  for (const [id, s] of Object.entries(SCHEMAS)) reg.add(s, { id });
  for (const status of [...errorStatuses].sort((a, b) => a - b)) reg.add(errorBodyFor(status), { id: `Error${status}` });
  const { schemas } = z.toJSONSchema(reg, { uri: (id) => `#/components/schemas/${id}`, io: 'output', unrepresentable: 'any' });
  return Object.fromEntries(Object.entries(schemas).map(([id, s]) => {
    const { $schema: _s, $id: _i, ...rest } = s as Record<string, unknown>;
    return [id, rest];
  }));
}

export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorStatuses = new Set<number>();
  for (const op of OPERATIONS) {
    const params = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const query = op.query ? Object.entries((jsonSchema(op.query) as { properties?: Record<string, unknown> }).properties ?? {})
      .map(([name, schema]) => ({ name, in: 'query', required: false, schema })) : [];
    (paths[op.path] ??= {})[op.method] = {
      operationId: operationId(op),
      summary: op.summary,
      ...(params.length || query.length ? { parameters: [...params, ...query] } : {}),
      ...(op.body ? { requestBody: { required: false, content: { 'application/json': { schema: jsonSchema(op.body) } } } } : {}),
      ...(op.rawBody ? { requestBody: { required: true, content: { 'application/octet-stream': { schema: { type: 'string', contentMediaType: 'application/octet-stream' } } } } } : {}),
      responses: responsesObject(op, responsesOf(op.method, op.path), errorStatuses),
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'emberd', version: VERSION, description: 'Local-first microVM sandboxes for AI-agent tool calls. Prose reference: docs/api.md.' },
    paths,
    components: { schemas: componentSchemas(errorStatuses) },
  };
}

/** e.g. "get /sandboxes/{id}/files/stat" -> "getSandboxesIdFilesStat"; "/" -> "getRoot". */
function operationId(op: Operation): string {
  const words = op.path.replace(/\/\*$/, '/proxied').split(/[^A-Za-z0-9]+/).filter(Boolean);
  return op.method + (words.length ? words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('') : 'Root');
}
