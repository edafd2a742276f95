// Every answer of the HTTP API as zod schemas: the single source of truth for the responses in
// /openapi.json (openapi.ts), the handlers' return types (z.infer, so drift is a type error) and
// the e2e tests' response checks (test/helpers/response-check.ts validates every answer the test
// daemons give against the generated document). Objects are strict: a field a handler adds
// without adding it here fails the e2e tests.
import { z } from 'zod';
import { ERROR_STATUS, type ErrorCode } from '../../errors.ts';

const isoTime = z.string().describe('ISO-8601 UTC time');
const errorCode = z.enum(Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]]);

// ---- errors ----

export const errorBody = z.strictObject({
  error: z.strictObject({
    code: errorCode.describe('stable: match on this, never on the message'),
    message: z.string().describe('what went wrong and how to fix it'),
  }),
});

/** The codes a status can carry (ERROR_STATUS), so a response's status and code must agree. */
export function errorCodesFor(status: number): ErrorCode[] {
  return (Object.keys(ERROR_STATUS) as ErrorCode[]).filter((c) => ERROR_STATUS[c] === status);
}

// ---- sandboxes ----

const sandboxState = z.enum(['creating', 'ready', 'pausing', 'paused', 'resuming', 'destroying', 'gone', 'failed']);
const backendName = z.enum(['qemu', 'firecracker', 'host-agent']);
const env = z.record(z.string(), z.string());

/** POST /sandboxes, POST /sandboxes/{id}/timeout, each entry of GET /sandboxes. */
export const sandboxSummary = z.strictObject({
  id: z.string(),
  state: sandboxState,
  language_pack: z.string(),
  backend: backendName,
  created_at: isoTime,
  boot_ms: z.number().int().nullable(),
  boot_mode: z.enum(['cold', 'restore', 'pool', 'resume', 'fork']).nullable(),
  vcpus: z.number().int(),
  memory_mib: z.number().int(),
  disk_mib: z.number().int().nullable().describe('the writable disk in effect in the guest (null: not yet known)'),
  pids_max: z.number().int().nullable(),
  env: env.describe('variables every exec inherits'),
  expires_at: isoTime.nullable().describe('when the daemon destroys it (null: no deadline)'),
  timeout_s: z.number().int().nullable(),
  on_timeout: z.enum(['destroy', 'pause']),
  auto_resume: z.boolean(),
  paused: z.strictObject({
    paused_at: isoTime,
    bytes: z.number().int().describe('the saved VM on disk'),
    pause_ms: z.number().int(),
    expires_at: isoTime.nullable().describe('when it is deleted (--paused-retention; null: never)'),
  }).nullable().describe('while paused'),
  forked_from: z.string().nullable(),
});

/** POST /sandboxes/{id}/fork */
export const forkAnswer = z.strictObject({ sandboxes: z.array(sandboxSummary) });

/** POST /sandboxes/{id}/ports, GET /sandboxes/{id}/ports/{port}, each entry of GET /sandboxes/{id}/ports */
export const portView = z.strictObject({
  port: z.number().int(),
  url: z.string().describe('the proxied path as an absolute URL on this daemon (HTTP and WebSockets; the daemon\'s auth applies)'),
  path: z.string().describe('/sandboxes/{id}/ports/{port}/'),
  host: z.string().nullable().describe('127.0.0.1:N for plain TCP (with "tcp"; no auth on it), else null'),
  created_at: isoTime,
  connections: z.number().int().describe('proxied connections open now'),
  connections_total: z.number().int(),
  bytes_in: z.number().int().describe('bytes carried to the sandbox'),
  bytes_out: z.number().int().describe('bytes carried from the sandbox'),
});
export const portList = z.strictObject({ ports: z.array(portView) });
/** A sandbox's egress (docs/network.md "Egress"): what it may reach and what it did. */
export const sandboxNetwork = z.strictObject({
  allow: z.array(z.string()).describe('the allowlist asked at create'),
  rate_mbit: z.number().nullable().describe('Mbit/s each way (null: unlimited)'),
  bytes_out: z.number().int().describe('IP bytes the guest sent that were let out (DNS to the resolver included)'),
  bytes_in: z.number().int().describe('IP bytes of replies that came back to the guest'),
  refused_connections: z.number().int().describe('connection attempts (TCP SYNs, UDP and ICMP packets) refused by the allowlist'),
  dns_answered: z.number().int().describe('queries for allowed names the resolver answered'),
  dns_refused: z.number().int().describe('queries the resolver refused (names not in the allowlist, other types)'),
});

/** Sandbox.view(): the summary and what only GET /sandboxes/{id} shows. */
export const sandboxView = sandboxSummary.extend({
  ready_at: isoTime.nullable(),
  vmm_pid: z.number().int().nullable(),
  agent_version: z.string().nullable(),
  error: z.strictObject({ code: z.string(), message: z.string() }).nullable().describe('why it failed'),
  network: sandboxNetwork.nullable().describe('egress counters (null: created without "network": no network device)'),
});

export const sandboxDetails = sandboxView.extend({ boot_log_tail: z.string().describe('the last 4 KiB of the guest console') });
export const sandboxList = z.strictObject({ sandboxes: z.array(sandboxSummary) });

// ---- exec ----

/**
 * A rich output in Jupyter's convention: MIME type -> data (base64 for binary types such as
 * image/png, a JSON value for JSON types, text otherwise), text/plain unless display()'s
 * include/exclude or a raw bundle leave it out, and whether it is the cell's final expression.
 */
export const resultBundle = z.object({
  is_main_result: z.boolean(),
  'text/plain': z.string().optional(),
}).catchall(z.unknown()).describe('a MIME bundle: {"image/png": "<base64>", "text/plain": "...", "is_main_result": false}');

/** The seed's four fields first, then the extensions. */
export const execAnswer = z.strictObject({
  stdout: z.string().describe('UTF-8 text, or base64 with output_encoding=base64'),
  stderr: z.string(),
  exit_code: z.number().int().describe('the exit status; 128+N after signal N; -1 when it could not run'),
  duration_ms: z.number().int(),
  timed_out: z.boolean(),
  truncated: z.boolean().describe('output beyond the cap was dropped'),
});

export const sessionExecAnswer = execAnswer.extend({
  value: z.string().nullable().describe("repr() of the cell's final expression; null when it ends with a statement or None"),
  session_reset: z.boolean().describe('the interpreter was lost (timeout kill or exit): its state is gone'),
  results: z.array(resultBundle).describe('MIME bundles in the order the cell made them (display(), figures, the main result)'),
});

/** The exec's JSON answer: a plain exec's, or a session cell's with its extra fields. */
export const execResult = z.union([execAnswer, sessionExecAnswer]);

export const backgroundStarted = z.strictObject({ process_id: z.string(), state: z.literal('running') });

/** One line of a streamed exec (Accept: application/x-ndjson). */
export const execEvent = z.union([
  z.strictObject({ type: z.enum(['stdout', 'stderr']), data: z.string() }),
  resultBundle.extend({ type: z.literal('result') }).describe('a session cell\'s rich output, in its place among the output'),
  z.strictObject({ type: z.literal('exit'), exit_code: z.number().int(), duration_ms: z.number().int(), timed_out: z.boolean(), truncated: z.boolean() }),
  z.strictObject({
    type: z.literal('exit'), exit_code: z.number().int(), duration_ms: z.number().int(), timed_out: z.boolean(), truncated: z.boolean(),
    value: z.string().nullable(), session_reset: z.boolean(),
  }).describe('the end of a session cell'),
  z.strictObject({ type: z.literal('error'), code: errorCode, message: z.string() }),
]);

// ---- background processes ----

export const processView = z.strictObject({
  process_id: z.string(),
  state: z.enum(['running', 'exited']),
  started_at: isoTime,
  command: z.string().describe('the argv joined, or the code (at most 200 characters, then ...)'),
  exit_code: z.number().int().nullable(),
  signal: z.number().int().nullable(),
  timed_out: z.boolean(),
  truncated: z.boolean(),
  duration_ms: z.number().int().nullable(),
  stdout_bytes: z.number().int(),
  stderr_bytes: z.number().int(),
});
export const processList = z.strictObject({ processes: z.array(processView) });
export const processOutput = z.strictObject({
  data: z.string(),
  next_offset: z.number().int().describe('where the next read continues'),
  eof: z.boolean().describe('the process exited and everything it wrote was read'),
  truncated: z.boolean(),
});

// ---- files ----

export const fileStat = z.strictObject({
  name: z.string(),
  path: z.string(),
  type: z.enum(['file', 'dir', 'symlink', 'other']),
  size: z.number().int(),
  mode: z.string().regex(/^[0-7]{4}$/).describe('permission bits as 4 octal digits, e.g. "0644"'),
  mtime: isoTime,
});
export const fileList = z.strictObject({ entries: z.array(fileStat) });
export const fileWritten = z.strictObject({ path: z.string(), size: z.number().int().describe('bytes written (the tar stream\'s size for format=tar)') });

// ---- sessions, packs ----

export const sessionList = z.strictObject({
  sessions: z.array(z.strictObject({ name: z.string(), created_at: isoTime, last_used_at: isoTime, execs: z.number().int() })),
});

const snapshotView = z.strictObject({
  status: z.enum(['missing', 'building', 'ready', 'failed']),
  key: z.string(),
  bytes: z.number().int().nullable(),
  build_ms: z.number().int().nullable(),
  error: z.string().nullable(),
});

export const packView = z.strictObject({
  name: z.string(),
  description: z.string().nullable(),
  custom: z.boolean(),
  size: z.number().int().nullable(),
  sha256: z.string().nullable(),
  interpreter: z.array(z.string()).nullable().describe('the argv prefix "code" runs with'),
  env: env,
  snapshot: snapshotView.nullable().describe('its default-shape golden snapshot (null: snapshots off)'),
  error: z.string().nullable().describe('why it cannot be used (null: it can)'),
});
export const packList = z.strictObject({ packs: z.array(packView) });

// ---- the daemon ----

export const daemonInfo = z.strictObject({
  name: z.literal('emberd'),
  version: z.string(),
  api_version: z.literal(1),
  backend: z.strictObject({
    name: backendName,
    binary: z.string(),
    version: z.string(),
    accel: z.string().describe('e.g. "kvm" or "tcg" for QEMU'),
    reason: z.string().describe('why this backend and acceleration were chosen'),
    warnings: z.array(z.string()),
  }),
  language_packs: z.array(z.string()),
  default_language_pack: z.string(),
  sandboxes: z.strictObject({ live: z.number().int(), limit: z.number().int() }),
  machine: z.strictObject({ vcpus: z.number().int(), memory_mib: z.number().int() }),
  snapshots: z.record(z.string(), snapshotView).nullable().describe('golden snapshot per pack (null: off, or the backend has none)'),
  pool: z.record(z.string(), z.strictObject({ size: z.number().int(), ready: z.number().int(), filling: z.number().int() })).nullable()
    .describe('warm pool per pack (null: off)'),
  admission: z.strictObject({
    boots: z.strictObject({ max: z.number().int(), running: z.number().int(), queued: z.number().int() }),
    memory_reserve_mib: z.number(),
    host_available_mib: z.number(),
  }),
});

export const openApiShape = z.looseObject({ openapi: z.literal('3.1.0'), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) });

/** The named schemas of /openapi.json's components (responses refer to them by these names). */
export const SCHEMAS: Record<string, z.ZodType> = {
  DaemonInfo: daemonInfo, OpenApiDocument: openApiShape, PackList: packList, Pack: packView, Snapshot: snapshotView,
  SandboxSummary: sandboxSummary, SandboxDetails: sandboxDetails, SandboxList: sandboxList, ForkAnswer: forkAnswer, Port: portView, PortList: portList,
  ExecAnswer: execAnswer, SessionExecAnswer: sessionExecAnswer, ExecResult: execResult, ResultBundle: resultBundle,
  ExecEvent: execEvent, BackgroundStarted: backgroundStarted,
  Process: processView, ProcessList: processList, ProcessOutput: processOutput,
  FileStat: fileStat, FileList: fileList, FileWritten: fileWritten, SessionList: sessionList,
  Error: errorBody,
};

/** The error body of one status: its code is one of that status's codes. */
export function errorBodyFor(status: number): z.ZodType {
  const codes = errorCodesFor(status);
  if (!codes.length) throw new Error(`no error code has status ${status} (src/errors.ts)`);
  return z.strictObject({ error: z.strictObject({ code: z.enum(codes as [ErrorCode, ...ErrorCode[]]), message: z.string() }) });
}

export type SandboxSummary = z.infer<typeof sandboxSummary>;
export type SandboxDetails = z.infer<typeof sandboxDetails>;
export type SandboxList = z.infer<typeof sandboxList>;
export type ForkAnswer = z.infer<typeof forkAnswer>;
export type PortAnswer = z.infer<typeof portView>;
export type PortList = z.infer<typeof portList>;
export type ExecAnswer = z.infer<typeof execAnswer>;
export type SessionExecAnswer = z.infer<typeof sessionExecAnswer>;
export type BackgroundStarted = z.infer<typeof backgroundStarted>;
export type ExecEventLine = z.infer<typeof execEvent>;
export type ProcessAnswer = z.infer<typeof processView>;
export type ProcessList = z.infer<typeof processList>;
export type ProcessOutputAnswer = z.infer<typeof processOutput>;
export type FileList = z.infer<typeof fileList>;
export type FileWritten = z.infer<typeof fileWritten>;
export type FileStatAnswer = z.infer<typeof fileStat>;
export type SessionList = z.infer<typeof sessionList>;
export type PackList = z.infer<typeof packList>;
export type DaemonInfoAnswer = z.infer<typeof daemonInfo>;

// ---- what each route answers ----

/** A success answer: JSON (a schema), a byte stream, NDJSON lines, or nothing (204). */
export type Body =
  | { json: z.ZodType }
  | { binary: string[] } // media types
  | { ndjson: z.ZodType } // each line
  | { text: string } // media type
  | { any: true } // a protocol of its own (MCP)
  | { none: true };

export interface Success { status: number; description: string; bodies: Body[] }

export interface RouteResponses {
  ok: Success[];
  /** Error statuses this route is known to answer (an Error whose code has that status), besides
   * 401 (auth on) and 500 (a bug). */
  errors: number[];
  /** A protocol of its own (MCP): any other status, in its own format. */
  other?: 'any';
  /** Statuses every route answers that this one answers in its own format instead (MCP's 403). */
  ownFormat?: number[];
}

// A sandbox that does not exist / is not ready / whose guest fails; a paused one that cannot be
// resumed now (a limit: 429, 503; its saved state: 409, 500).
const ID = [404, 409, 429, 500, 502, 503, 504];
const BODY = [400, 413, 415];
const FILES = [400, 403, 404, 409, 413, 429, 502, 503, 504, 507];
const json = (schema: z.ZodType): Body => ({ json: schema });
const noContent = (description: string): Success[] => [{ status: 204, description, bodies: [{ none: true }] }];
const ok = (status: number, description: string, ...bodies: Body[]): Success[] => [{ status, description, bodies }];

/** Keyed "METHOD /path"; openapi.ts's OPERATIONS and this table are checked to be the same set. */
export const RESPONSES: Record<string, RouteResponses> = {
  'GET /': { ok: ok(200, 'the daemon', json(daemonInfo)), errors: [] },
  'GET /openapi.json': { ok: ok(200, 'this document', json(openApiShape)), errors: [] },
  'GET /packs': { ok: ok(200, 'every pack, usable or broken', json(packList)), errors: [] },
  'POST /sandboxes': {
    ok: ok(201, 'the sandbox, ready', json(sandboxSummary)),
    errors: [...BODY, 409, 429, 501, 502, 503, 504],
  },
  'GET /sandboxes': { ok: ok(200, 'live sandboxes', json(sandboxList)), errors: [] },
  'GET /sandboxes/{id}': { ok: ok(200, 'the sandbox', json(sandboxDetails)), errors: [404] },
  'DELETE /sandboxes/{id}': { ok: noContent('destroyed'), errors: [404, 409] },
  'POST /sandboxes/{id}/pause': { ok: ok(200, 'the sandbox, paused (its state saved, its VM gone)', json(sandboxSummary)), errors: [400, 404, 409, 500, 502, 504, 507] },
  'POST /sandboxes/{id}/resume': { ok: ok(200, 'the sandbox, running again as it was', json(sandboxSummary)), errors: [...BODY, ...ID] },
  'POST /sandboxes/{id}/fork': { ok: ok(201, 'the new sandboxes, ready, each from the parent\'s state', json(forkAnswer)), errors: [...BODY, ...ID] },
  'POST /sandboxes/{id}/timeout': { ok: ok(200, 'the sandbox with its new deadline', json(sandboxSummary)), errors: [...BODY, 404, 409] },
  'POST /sandboxes/{id}/exec': {
    ok: [
      { status: 200, description: 'the exec\'s answer (with value, session_reset and results for a session cell); or, with Accept: application/x-ndjson, its events, one JSON object a line', bodies: [json(execResult), { ndjson: execEvent }] },
      { status: 202, description: 'a background process started ("background": true)', bodies: [json(backgroundStarted)] },
    ],
    errors: [...BODY, ...ID, 429, 503],
  },
  'GET /sandboxes/{id}/processes': { ok: ok(200, 'background processes', json(processList)), errors: [404, 409] },
  'GET /sandboxes/{id}/processes/{pid}': { ok: ok(200, 'the process', json(processView)), errors: [404, 409] },
  'GET /sandboxes/{id}/processes/{pid}/output': { ok: ok(200, 'a slice of its output', json(processOutput)), errors: [400, 404, 409] },
  'POST /sandboxes/{id}/processes/{pid}/stdin': { ok: noContent('written (or closed)'), errors: [...BODY, ...ID] },
  'POST /sandboxes/{id}/processes/{pid}/signal': { ok: noContent('sent'), errors: [...BODY, ...ID] },
  'GET /sandboxes/{id}/processes/{pid}/wait': { ok: ok(200, 'the process, exited or still running at the timeout', json(processView)), errors: [400, 404, 409] },
  'DELETE /sandboxes/{id}/processes/{pid}': { ok: noContent('killed if running, and forgotten'), errors: ID },
  'PUT /sandboxes/{id}/files': { ok: ok(201, 'written', json(fileWritten)), errors: FILES },
  'GET /sandboxes/{id}/files': {
    ok: ok(200, 'the file\'s bytes, or the directory as a tar stream (format=tar)', { binary: ['application/octet-stream', 'application/x-tar'] }),
    errors: FILES,
  },
  'DELETE /sandboxes/{id}/files': { ok: noContent('deleted'), errors: FILES },
  'GET /sandboxes/{id}/files/stat': { ok: ok(200, 'the path', json(fileStat)), errors: FILES },
  'GET /sandboxes/{id}/files/list': { ok: ok(200, 'the directory\'s entries, sorted by name', json(fileList)), errors: FILES },
  'GET /sandboxes/{id}/pty': {
    // After the 101 the connection carries WebSocket frames, not an HTTP body; the media type stands for them.
    ok: [{ status: 101, description: 'switching to the WebSocket protocol: the terminal\'s bytes and JSON control messages (docs/api.md "PTY")', bodies: [{ binary: ['application/octet-stream'] }] }],
    errors: [400, ...ID],
  },
  'POST /sandboxes/{id}/ports': {
    ok: [
      { status: 201, description: 'the port, exposed', bodies: [json(portView)] },
      { status: 200, description: 'the port was already exposed (with "tcp", its listener is now open)', bodies: [json(portView)] },
    ],
    errors: [...BODY, 404, 409, 429],
  },
  'GET /sandboxes/{id}/ports': { ok: ok(200, 'exposed ports', json(portList)), errors: [404] },
  'GET /sandboxes/{id}/ports/{port}': { ok: ok(200, 'the port', json(portView)), errors: [400, 404] },
  'DELETE /sandboxes/{id}/ports/{port}': { ok: noContent('closed, with every connection through it'), errors: [400, 404] },
  'GET /sandboxes/{id}/sessions': { ok: ok(200, 'interpreter sessions', json(sessionList)), errors: [404, 409] },
  'DELETE /sandboxes/{id}/sessions/{name}': { ok: noContent('ended'), errors: [400, 404, 409] },
};

/** Routes other parts of the daemon own, answered in their own formats. */
export const OTHER_PROTOCOLS: Record<string, RouteResponses> = {
  // Prometheus text exposition format
  '/metrics': { ok: ok(200, 'metrics in the Prometheus text format', { text: 'text/plain' }), errors: [] },
  // MCP Streamable HTTP: JSON-RPC messages as JSON or server-sent events; statuses are the transport's
  '/mcp': {
    ok: [
      { status: 200, description: 'MCP Streamable HTTP: JSON-RPC as JSON or server-sent events', bodies: [{ any: true }] },
      { status: 202, description: 'a notification or a response accepted: no result', bodies: [{ any: true }] },
    ],
    errors: [],
    other: 'any',
    ownFormat: [403], // its DNS-rebinding refusal is JSON-RPC (src/mcp/http.ts), and applies with auth on too
  },
};

// The proxied path: the sandbox's server answers (any status, any body); emberd's own errors come
// before a connection to it exists.
const PROXIED: RouteResponses = {
  ok: [
    { status: 200, description: 'what the server in the sandbox answers, passed through (any status; 101 for a WebSocket)', bodies: [{ any: true }] },
  ],
  errors: [400, 404, 409, 429, 502, 503, 504],
  other: 'any',
};
for (const m of ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) OTHER_PROTOCOLS[`${m} /sandboxes/{id}/ports/{port}/*`] = PROXIED;

/** The responses of `METHOD path`, from RESPONSES or, for another protocol's path, OTHER_PROTOCOLS. */
export function responsesOf(method: string, path: string): RouteResponses | undefined {
  const key = `${method.toUpperCase()} ${path}`;
  return RESPONSES[key] ?? OTHER_PROTOCOLS[key] ?? OTHER_PROTOCOLS[path];
}
