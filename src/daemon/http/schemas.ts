// Every request body and query string of the HTTP API, as zod schemas; /openapi.json is generated
// from them. docs/api.md documents them; the end-to-end tests exercise every rule. Unknown fields
// are rejected so a typo never silently does nothing.
import { z } from 'zod';
import { LONGEST_TIMEOUT_S, MAX_FORKS, MIN_MEMORY_MIB } from '../../sandbox/manager.ts';
import { SESSION_NAME } from '../../sandbox/sessions.ts';
import { MAX_ALLOW_ENTRIES } from '../../sandbox/egress/policy.ts';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const env = z.record(z.string(), z.string().max(1 << 16)).refine((e) => Object.keys(e).every((k) => ENV_NAME.test(k)), {
  message: 'environment variable names are letters, digits and _, not starting with a digit',
});

const timeoutS = z.number().int().min(0).max(LONGEST_TIMEOUT_S);

export const createSandboxBody = z.strictObject({
  language_pack: z.string().min(1).max(64).optional(),
  /** The machine (default --vcpus, --memory; at most --max-vcpus, --max-memory). */
  vcpus: z.number().int().min(1).max(64).optional(),
  memory_mib: z.number().int().min(MIN_MEMORY_MIB).max(1 << 20).optional(),
  /** The writable disk (a tmpfs in the guest's RAM) in MiB (default --disk; at most --max-disk). */
  disk_mib: z.number().int().min(16).max(1 << 20).optional(),
  /** Processes + threads the sandbox's execs may have (default --pids-max; 0: the guest's ceiling). */
  pids_max: z.number().int().min(0).max(1 << 22).optional(),
  /** Variables every exec of the sandbox inherits; an exec's own env wins. */
  env: env.optional(),
  /** Seconds until the sandbox is destroyed (default --sandbox-timeout); 0: never, if allowed. */
  timeout_s: timeoutS.optional(),
  /** At the deadline: destroy it (default), or pause it (kept --paused-retention, resumable). */
  on_timeout: z.enum(['destroy', 'pause']).optional(),
  /** Calls on the sandbox while it is paused resume it first (default); false: they answer 409 SANDBOX_PAUSED. */
  auto_resume: z.boolean().optional(),
  /**
   * Egress (docs/network.md "Egress"): a network device whose traffic reaches only these
   * destinations. Absent: no network device at all.
   */
  network: z.strictObject({
    allow: z.array(z.string().min(1).max(253)).max(MAX_ALLOW_ENTRIES).describe('IPv4 addresses or CIDRs ("198.51.100.0/24") and host names ("pypi.org"); private, link-local and loopback ranges and the host\'s own addresses only when an entry lies inside them'),
    rate_mbit: z.number().positive().max(100_000).optional().describe('bandwidth each way in Mbit/s (default --egress-rate-mbit: unlimited)'),
  }).optional(),
}).optional();

export const sandboxTimeoutBody = z.strictObject({ timeout_s: timeoutS });

/** POST /sandboxes/{id}/resume: optionally a new lifetime from now. */
export const resumeBody = z.strictObject({ timeout_s: timeoutS.optional() }).optional();

/** POST /sandboxes/{id}/fork */
export const forkBody = z.strictObject({ count: z.number().int().min(1).max(MAX_FORKS).optional() }).optional();

/** POST /sandboxes/{id}/ports */
export const exposePortBody = z.strictObject({
  port: z.number().int().min(1).max(65535).describe('the TCP port in the sandbox (its server listens on 127.0.0.1 or 0.0.0.0 there)'),
  tcp: z.boolean().optional().describe('also open a plain TCP listener on 127.0.0.1 (default: true when the daemon has no auth, false with --auth: that listener checks no token)'),
});

const base64 = z.string().max(4 << 20).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
export const outputEncoding = z.enum(['utf8', 'base64']);

export const execBody = z.strictObject({
  code: z.string().max(1 << 20).optional(),
  argv: z.array(z.string().max(1 << 16)).min(1).max(4096).optional(),
  env: env.optional(),
  cwd: z.string().min(1).max(4096).optional(),
  stdin: z.string().max(1 << 20).optional(),
  stdin_base64: base64.optional(),
  timeout_ms: z.number().int().positive().optional(),
  output_encoding: outputEncoding.optional(),
  background: z.boolean().optional(),
  session: z.string().regex(SESSION_NAME, 'session names are 1-64 letters, digits, _ . or -').optional(),
}).refine((b) => (b.code === undefined) !== (b.argv === undefined), {
  message: 'give exactly one of "code" (source for the language pack\'s interpreter) or "argv" (a program and its arguments)',
}).refine((b) => b.stdin === undefined || b.stdin_base64 === undefined, {
  message: 'give at most one of "stdin" (text) and "stdin_base64" (bytes)',
}).refine((b) => b.session === undefined || (b.code !== undefined && !b.background && b.env === undefined && b.cwd === undefined), {
  message: 'a "session" runs "code" in a persistent interpreter: it cannot take "argv", "background", "env" or "cwd"',
});

export const processStdinBody = z.strictObject({
  data: z.string().max(1 << 20).optional(),
  data_base64: base64.optional(),
  eof: z.boolean().optional(),
}).refine((b) => b.data === undefined || b.data_base64 === undefined, { message: 'give at most one of "data" and "data_base64"' });

export const processSignalBody = z.strictObject({
  signal: z.union([z.number().int().min(1).max(64), z.string().regex(/^(SIG)?[A-Z0-9]+$/, 'a signal name such as SIGTERM')]),
});

export const processOutputQuery = z.strictObject({
  stream: z.enum(['stdout', 'stderr']).default('stdout'),
  offset: z.coerce.number().int().min(0).default(0),
  max_bytes: z.coerce.number().int().min(1).max(16 << 20).default(1 << 20),
  output_encoding: outputEncoding.default('utf8'),
});

export const processWaitQuery = z.strictObject({
  timeout_ms: z.coerce.number().int().min(0).max(3_600_000).default(30_000),
});

// ---- files: query strings (the body is the raw data) ----

const path = z.string().optional(); // checked by normalizePath: a missing or bad path is INVALID_PATH
const bool = z.enum(['true', 'false', '1', '0']).optional().transform((v) => v === 'true' || v === '1');
export const putFileQuery = z.strictObject({ path, mode: z.string().optional(), format: z.enum(['tar']).optional() });
export const getFileQuery = z.strictObject({ path, format: z.enum(['tar']).optional() });
export const pathQuery = z.strictObject({ path });
export const deleteFileQuery = z.strictObject({ path, recursive: bool });
export const FILE_QUERY_HINT = 'the parameters are path, and mode and format=tar for PUT, format=tar for GET, recursive=true for DELETE';

export type CreateSandboxBody = z.infer<typeof createSandboxBody>;
export type ExecBody = z.infer<typeof execBody>;
