// Every error emberd reports carries a stable code. Users (and the SDK and CLI) match
// on `code`, never on the message; messages say what to do about it.

export const ERROR_STATUS = {
  // request problems (4xx)
  INVALID_JSON: 400,
  INVALID_REQUEST: 400,
  UNKNOWN_LANGUAGE_PACK: 400,
  PACK_BROKEN: 409,
  UNAUTHORIZED: 401,
  HOST_NOT_ALLOWED: 403,
  ORIGIN_NOT_ALLOWED: 403,
  ROUTE_NOT_FOUND: 404,
  SANDBOX_NOT_FOUND: 404,
  PROCESS_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  SANDBOX_NOT_READY: 409,
  SANDBOX_FAILED: 409,
  PROCESS_EXITED: 409,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  TOO_MANY_SANDBOXES: 429,
  TOO_MANY_PROCESSES: 429,
  // files (src/sandbox/files.ts)
  INVALID_PATH: 400,
  IS_A_DIRECTORY: 400,
  NOT_A_DIRECTORY: 400,
  INVALID_TAR: 400,
  PERMISSION_DENIED: 403,
  FILE_NOT_FOUND: 404,
  DIRECTORY_NOT_EMPTY: 409,
  FILE_TOO_LARGE: 413,
  NO_SPACE: 507,
  FILE_OPERATION_FAILED: 500,
  // sessions (src/sandbox/sessions.ts)
  SESSIONS_UNSUPPORTED: 400,
  SESSION_NOT_FOUND: 404,
  TOO_MANY_SESSIONS: 429,
  SESSION_START_FAILED: 500,
  // pause, resume, fork (src/sandbox/manager.ts, saved.ts)
  SANDBOX_PAUSED: 409,
  SANDBOX_BUSY: 409,
  PAUSE_UNSUPPORTED: 400,
  SAVED_STATE_INCOMPATIBLE: 409,
  SAVED_STATE_CORRUPT: 409,
  PAUSED_DISK_FULL: 507,
  PAUSE_FAILED: 500,
  // exposed ports (src/sandbox/ports.ts, src/daemon/http/port-proxy.ts)
  PORT_NOT_FOUND: 404,
  TOO_MANY_PORTS: 429,
  TOO_MANY_CONNECTIONS: 429,
  PORT_NOT_LISTENING: 502,
  PORT_CONNECT_FAILED: 502,
  // egress (src/sandbox/egress/)
  EGRESS_UNAVAILABLE: 501,
  EGRESS_SETUP_FAILED: 500,
  // emberd or VM problems (5xx)
  INTERNAL: 500,
  BOOT_FAILED: 500,
  VMM_EXITED: 502,
  AGENT_DISCONNECTED: 502,
  AGENT_PROTOCOL: 502,
  AGENT_VERSION_MISMATCH: 502,
  SHUTTING_DOWN: 503,
  HOST_MEMORY_LOW: 503,
  TOO_BUSY: 503,
  BOOT_TIMEOUT: 504,
  AGENT_TIMEOUT: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class EmberdError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** For a refusal that will pass (429, 503): when to retry, sent as Retry-After. */
  readonly retryAfterS: number | undefined;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryAfterS?: number }) {
    super(message, options);
    this.name = 'EmberdError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.retryAfterS = options?.retryAfterS;
  }

  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

export function isEmberdError(e: unknown, code?: ErrorCode): e is EmberdError {
  return e instanceof EmberdError && (code === undefined || e.code === code);
}
