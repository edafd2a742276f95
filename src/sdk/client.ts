// The low-level TypeScript client of the emberd HTTP API: one method per endpoint, the daemon's
// snake_case shapes. emberctl and the Sandbox class (sandbox.ts, the package's main API) are built
// on it; it is shipped in the `emberd` package too (docs/sdk.md).
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { defaultTokenFile } from '../state-dir.ts';

export interface SandboxSummary {
  id: string;
  state: 'creating' | 'ready' | 'pausing' | 'paused' | 'resuming' | 'destroying' | 'gone' | 'failed';
  language_pack: string;
  backend: string;
  created_at: string;
  boot_ms: number | null;
  boot_mode: 'cold' | 'restore' | 'pool' | 'resume' | 'fork' | null;
  vcpus: number;
  memory_mib: number;
  /** The writable disk and the process limit in effect in the guest. */
  disk_mib: number | null;
  pids_max: number | null;
  /** Variables every exec of the sandbox inherits. */
  env: Record<string, string>;
  /** When the sandbox will be destroyed; null: no deadline. */
  expires_at: string | null;
  timeout_s: number | null;
  /** What its deadline does: destroy it, or pause it (kept --paused-retention, resumable). */
  on_timeout: 'destroy' | 'pause';
  /** Calls on it while paused resume it first; false: they answer 409 SANDBOX_PAUSED. */
  auto_resume: boolean;
  /** While paused: when, its size on disk, how long the pause took, when it is deleted (null: never). */
  paused: PausedInfo | null;
  /** The sandbox this one was forked from; null: not a fork. */
  forked_from: string | null;
}

/** The `paused` field of a paused sandbox's summary. */
export interface PausedInfo {
  paused_at: string;
  /** The saved VM on disk. */
  bytes: number;
  pause_ms: number;
  /** When the daemon deletes it (--paused-retention); null: never. */
  expires_at: string | null;
}

/** One entry of GET /packs. */
export interface PackInfo {
  name: string;
  description: string | null;
  custom: boolean;
  size: number | null;
  sha256: string | null;
  interpreter: string[] | null;
  env: Record<string, string>;
  snapshot: { status: string; key: string; bytes: number | null; build_ms: number | null; error: string | null } | null;
  /** Why it cannot be used; null when it can. */
  error: string | null;
}

/** What a create may ask for; everything defaults to the daemon's flags. */
export interface CreateOptions {
  language_pack?: string;
  /** Seconds until the daemon destroys it. */
  timeout_s?: number;
  vcpus?: number;
  memory_mib?: number;
  /** The writable disk (RAM-backed) in MiB. */
  disk_mib?: number;
  /** Processes + threads its execs may have; 0: the guest's ceiling. */
  pids_max?: number;
  env?: Record<string, string>;
  /** At the deadline: destroy it (default), or pause it. */
  on_timeout?: 'destroy' | 'pause';
  /** Calls on it while paused resume it first (default true); false: they answer 409 SANDBOX_PAUSED. */
  auto_resume?: boolean;
}

export interface SandboxDetails extends SandboxSummary {
  ready_at: string | null;
  vmm_pid: number | null;
  agent_version: string | null;
  error: { code: string; message: string } | null;
  boot_log_tail: string;
}

export interface ExecOptions {
  code?: string;
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string;
  stdin_base64?: string;
  timeout_ms?: number;
  output_encoding?: 'utf8' | 'base64';
  /** Run `code` in this persistent interpreter (python pack). */
  session?: string;
}

/**
 * A rich output of a python session cell, in Jupyter's convention: MIME type -> data (base64 for
 * binary types such as image/png, a JSON value for JSON types, text otherwise; text/plain always),
 * and whether it is the cell's final expression (`is_main_result`).
 */
export type ResultBundle = { is_main_result: boolean; 'text/plain'?: string } & Record<string, unknown>;

/** One line of a streamed exec (Accept: application/x-ndjson); `result` and the exit's `value`
 * and `session_reset` come from session cells only. */
export type ExecEvent =
  | { type: 'stdout' | 'stderr'; data: string }
  | ({ type: 'result' } & ResultBundle)
  | { type: 'exit'; exit_code: number; duration_ms: number; timed_out: boolean; truncated: boolean; value?: string | null; session_reset?: boolean }
  | { type: 'error'; code: string; message: string };

export interface ExecResponse {
  stdout: string;
  stderr: string;
  exit_code: number;
  duration_ms: number;
  timed_out: boolean;
  truncated: boolean;
}

/** GET /sandboxes/{id}/processes/{pid} and its /wait. */
export interface ProcessInfo {
  process_id: string;
  state: 'running' | 'exited';
  started_at: string;
  command: string;
  exit_code: number | null;
  signal: number | null;
  timed_out: boolean;
  truncated: boolean;
  duration_ms: number | null;
  stdout_bytes: number;
  stderr_bytes: number;
}

/** A slice of a background process's buffered output. */
export interface ProcessOutput {
  data: string;
  /** Where the next read continues. */
  next_offset: number;
  /** The process has exited and everything it wrote was read. */
  eof: boolean;
  truncated: boolean;
}

/** One entry of GET /sandboxes/{id}/files/stat and /files/list. */
export interface FileStat {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  /** permission bits, 4 octal digits: "0644" */
  mode: string;
  /** ISO-8601 */
  mtime: string;
}

/** An exposed port of a sandbox (POST/GET /sandboxes/{id}/ports; docs/network.md "Ports"). */
export interface PortInfo {
  port: number;
  /** The proxied path as an absolute URL on the address this client used: HTTP and WebSockets, the daemon's auth applying. */
  url: string;
  /** `/sandboxes/{id}/ports/{port}/` */
  path: string;
  /** `127.0.0.1:N`, a plain TCP listener that checks no token (default without auth, or asked with `tcp`); null: none. */
  host: string | null;
  created_at: string;
  /** Proxied connections open now. */
  connections: number;
  connections_total: number;
  /** Bytes carried to the sandbox. */
  bytes_in: number;
  /** Bytes carried from the sandbox. */
  bytes_out: number;
}

/** What uploadFile streams: bytes, text (UTF-8), a Node stream or any (async) iterable of chunks, a web stream. */
export type UploadData = string | Uint8Array | Readable | AsyncIterable<Uint8Array> | Iterable<Uint8Array> | ReadableStream<Uint8Array>;

/**
 * Every failure of the SDK: an error answered by the daemon (its stable `code`, the HTTP `status`,
 * a `message` that says what to do), or one found on this side with status 0 (DAEMON_UNREACHABLE,
 * TOKEN_UNREADABLE, PROTOCOL_ERROR). Match on `code`.
 */
export class EmberdError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'EmberdError';
    this.status = status;
    this.code = code;
  }
}
/** The name this class had before the package: the same class. */
export { EmberdError as EmberdApiError };

export interface ClientOptions {
  /** Bearer token; default EMBERD_TOKEN, else the daemon's default token file when readable; null: none. */
  token?: string | null;
  /** Read the token from this file instead (EMBERD_TOKEN_FILE). */
  tokenFile?: string;
}

/** The token a client sends: given, EMBERD_TOKEN, the token file (given, EMBERD_TOKEN_FILE or the default), or none. */
export function resolveToken(o: ClientOptions = {}, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (o.token !== undefined) return o.token ?? undefined;
  if (env.EMBERD_TOKEN) return env.EMBERD_TOKEN;
  const file = o.tokenFile ?? env.EMBERD_TOKEN_FILE;
  try {
    return readFileSync(file ?? defaultTokenFile(env), 'utf8').trim() || undefined;
  } catch (e) {
    if (file) throw new EmberdError(0, 'TOKEN_UNREADABLE', `cannot read the token file ${file}: ${(e as Error).message}`);
    return undefined; // no default token file: a daemon without auth
  }
}

export class EmberdClient {
  readonly baseUrl: string;
  private readonly authHeader: Record<string, string>;

  /** `addr`: "host:port" or an http(s) URL; default EMBERD_URL, else EMBERD_ADDR, else 127.0.0.1:7777. */
  constructor(addr: string = process.env.EMBERD_URL || process.env.EMBERD_ADDR || '127.0.0.1:7777', opts: ClientOptions = {}) {
    this.baseUrl = /^https?:\/\//.test(addr) ? addr.replace(/\/$/, '') : `http://${addr}`;
    const token = resolveToken(opts);
    this.authHeader = token ? { authorization: `Bearer ${token}` } : {};
  }

  info(): Promise<Record<string, unknown>> {
    return this.request('GET', '/');
  }

  /** `timeout_s`: seconds until the daemon destroys it (default: the daemon's --sandbox-timeout). */
  createSandbox(opts: CreateOptions = {}): Promise<SandboxSummary> {
    return this.request('POST', '/sandboxes', opts);
  }

  /** Every language pack the daemon knows (usable ones have `error: null`). */
  async listPacks(): Promise<PackInfo[]> {
    return (await this.request<{ packs: PackInfo[] }>('GET', '/packs')).packs;
  }

  /** Resets the sandbox's deadline to now + timeoutS seconds (0: none, if the daemon allows it). */
  setTimeout(id: string, timeoutS: number): Promise<SandboxSummary> {
    return this.request('POST', `/sandboxes/${encodeURIComponent(id)}/timeout`, { timeout_s: timeoutS });
  }

  /**
   * Saves the whole sandbox (memory, files, processes, sessions) to the daemon's disk and ends its
   * VM; answers it with state "paused". 409 SANDBOX_BUSY while an exec, session cell or file
   * transfer runs in it.
   */
  pauseSandbox(id: string): Promise<SandboxSummary> {
    return this.request('POST', `/sandboxes/${encodeURIComponent(id)}/pause`);
  }

  /** Brings a paused sandbox back as it was; `timeout_s` gives it a new lifetime from now. A running one is answered as is. */
  resumeSandbox(id: string, opts: { timeout_s?: number } = {}): Promise<SandboxSummary> {
    return this.request('POST', `/sandboxes/${encodeURIComponent(id)}/resume`, opts);
  }

  /** `count` (1-16, default 1) new sandboxes, each from this one's state now; the parent goes on. */
  async forkSandbox(id: string, opts: { count?: number } = {}): Promise<SandboxSummary[]> {
    return (await this.request<{ sandboxes: SandboxSummary[] }>('POST', `/sandboxes/${encodeURIComponent(id)}/fork`, opts)).sandboxes;
  }

  async listSandboxes(): Promise<SandboxSummary[]> {
    return (await this.request<{ sandboxes: SandboxSummary[] }>('GET', '/sandboxes')).sandboxes;
  }

  getSandbox(id: string): Promise<SandboxDetails> {
    return this.request('GET', `/sandboxes/${encodeURIComponent(id)}`);
  }

  /** A session cell's answer also has `value`, `session_reset` and `results` (its rich outputs). */
  exec(id: string, opts: ExecOptions): Promise<ExecResponse & { value?: string | null; session_reset?: boolean; results?: ResultBundle[] }> {
    return this.request('POST', `/sandboxes/${encodeURIComponent(id)}/exec`, opts);
  }

  /**
   * Output events as they happen; stopping the iteration early, or aborting `signal`, kills the
   * process (a session cell is interrupted). An abort rejects with the signal's reason.
   */
  async *execStream(id: string, opts: ExecOptions, { signal }: { signal?: AbortSignal } = {}): AsyncGenerator<ExecEvent> {
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal!.reason);
    signal?.throwIfAborted();
    signal?.addEventListener('abort', onAbort, { once: true });
    let res: Response;
    try {
      res = await this.fetchRaw(`/sandboxes/${encodeURIComponent(id)}/exec`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' },
        body: JSON.stringify(opts),
        signal: ac.signal,
      });
    } catch (e) {
      signal?.removeEventListener('abort', onAbort);
      throw e;
    }
    if (!res.ok) await this.answer(res);
    let buf = '';
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line) yield JSON.parse(line) as ExecEvent;
        }
      }
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      ac.abort();
    }
  }

  /** Starts a background process and returns its id. */
  async startProcess(id: string, opts: ExecOptions): Promise<string> {
    return (await this.request<{ process_id: string }>('POST', `/sandboxes/${encodeURIComponent(id)}/exec`, { ...opts, background: true })).process_id;
  }

  async listProcesses(id: string): Promise<Record<string, unknown>[]> {
    return (await this.request<{ processes: Record<string, unknown>[] }>('GET', `/sandboxes/${encodeURIComponent(id)}/processes`)).processes;
  }

  getProcess(id: string, pid: string): Promise<ProcessInfo> {
    return this.request('GET', this.procPath(id, pid, ''));
  }

  /** Answers when the process exits, or after `timeoutMs` (at most an hour) with state "running". */
  waitProcess(id: string, pid: string, timeoutMs = 30_000): Promise<ProcessInfo> {
    return this.request('GET', this.procPath(id, pid, `/wait?timeout_ms=${timeoutMs}`));
  }

  /** Buffered output from `offset` (bytes), up to `max_bytes` (default 1 MiB). */
  readProcessOutput(id: string, pid: string, q: { stream?: 'stdout' | 'stderr'; offset?: number; max_bytes?: number; output_encoding?: 'utf8' | 'base64' } = {}): Promise<ProcessOutput> {
    const params = new URLSearchParams(Object.entries(q).filter((e) => e[1] !== undefined).map(([k, v]): [string, string] => [k, String(v)]));
    return this.request('GET', this.procPath(id, pid, `/output?${params.toString()}`));
  }

  /** Writes to the process's stdin; `eof` closes it. */
  async writeProcessStdin(id: string, pid: string, data: string | Uint8Array | undefined, opts: { eof?: boolean } = {}): Promise<void> {
    const body = data === undefined ? {} : typeof data === 'string' ? { data } : { data_base64: Buffer.from(data).toString('base64') };
    await this.request('POST', this.procPath(id, pid, '/stdin'), { ...body, ...(opts.eof ? { eof: true } : {}) });
  }

  /** Signals the process's whole group (a name such as "SIGTERM", or a number). */
  async signalProcess(id: string, pid: string, signal: string | number = 'SIGKILL'): Promise<void> {
    await this.request('POST', this.procPath(id, pid, '/signal'), { signal });
  }

  /** Kills it if it still runs, and forgets it (its output too). */
  async removeProcess(id: string, pid: string): Promise<void> {
    await this.request('DELETE', this.procPath(id, pid, ''));
  }

  // ---- ports (docs/api.md, "Ports"): a server in the sandbox reached through the daemon ----

  /**
   * Exposes the sandbox's TCP `port` (the server need not be up yet); an exposed one is answered
   * as is. `tcp`: also open a plain 127.0.0.1 listener (default: only when the daemon has no auth).
   */
  exposePort(id: string, port: number, opts: { tcp?: boolean } = {}): Promise<PortInfo> {
    return this.request('POST', `/sandboxes/${encodeURIComponent(id)}/ports`, { port, ...(opts.tcp === undefined ? {} : { tcp: opts.tcp }) });
  }

  async listPorts(id: string): Promise<PortInfo[]> {
    return (await this.request<{ ports: PortInfo[] }>('GET', `/sandboxes/${encodeURIComponent(id)}/ports`)).ports;
  }

  /** PORT_NOT_FOUND when it is not exposed. */
  getPort(id: string, port: number): Promise<PortInfo> {
    return this.request('GET', `/sandboxes/${encodeURIComponent(id)}/ports/${port}`);
  }

  /** Closes the port's listener and every connection through it; PORT_NOT_FOUND when it is not exposed. */
  async closePort(id: string, port: number): Promise<void> {
    await this.request('DELETE', `/sandboxes/${encodeURIComponent(id)}/ports/${port}`);
  }

  private procPath(id: string, pid: string, sub: string): string {
    return `/sandboxes/${encodeURIComponent(id)}/processes/${encodeURIComponent(pid)}${sub}`;
  }

  async deleteSandbox(id: string): Promise<void> {
    await this.request('DELETE', `/sandboxes/${encodeURIComponent(id)}`);
  }

  // ---- files (docs/api.md, "Files"): bodies are streamed both ways, never buffered whole ----

  /**
   * Streams `data` into the file at `path` (absolute, in the sandbox); parent directories are
   * created and an existing file is replaced atomically. With `format: 'tar'`, `path` is a
   * directory and `data` a tar stream extracted into it.
   */
  async uploadFile(id: string, path: string, data: UploadData, opts: { mode?: string | number; format?: 'tar' } = {}): Promise<{ path: string; size: number }> {
    const mode = typeof opts.mode === 'number' ? opts.mode.toString(8).padStart(4, '0') : opts.mode;
    const buffered = typeof data === 'string' || data instanceof Uint8Array;
    const body = buffered ? data : data instanceof ReadableStream ? data : Readable.from(data as AsyncIterable<Uint8Array>);
    const res = await this.fetchRaw(this.filesPath(id, '', { path, mode, format: opts.format }), {
      method: 'PUT',
      headers: { 'content-type': opts.format === 'tar' ? 'application/x-tar' : 'application/octet-stream' },
      body: body as RequestInit['body'],
      ...(buffered ? {} : { duplex: 'half' }),
    });
    return this.answer(res);
  }

  /** The file's bytes (or, with `format: 'tar'`, the directory as a tar stream), as a Node stream. */
  async downloadFile(id: string, path: string, opts: { format?: 'tar' } = {}): Promise<Readable> {
    const res = await this.fetchRaw(this.filesPath(id, '', { path, format: opts.format }), { method: 'GET' });
    if (!res.ok || !res.body) return this.answer(res);
    return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  }

  stat(id: string, path: string): Promise<FileStat> {
    return this.request('GET', this.filesPath(id, '/stat', { path }));
  }

  async list(id: string, path: string): Promise<FileStat[]> {
    return (await this.request<{ entries: FileStat[] }>('GET', this.filesPath(id, '/list', { path }))).entries;
  }

  /** Deletes a file, a symlink or an empty directory; `recursive` deletes a directory with its contents. */
  async deleteFile(id: string, path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.request('DELETE', this.filesPath(id, '', { path, recursive: opts.recursive ? 'true' : undefined }));
  }

  private filesPath(id: string, sub: string, query: Record<string, string | undefined>): string {
    const q = new URLSearchParams(Object.entries(query).filter((e): e is [string, string] => e[1] !== undefined));
    return `/sandboxes/${encodeURIComponent(id)}/files${sub}?${q.toString()}`;
  }

  private async fetchRaw(path: string, init: RequestInit & { duplex?: 'half' }): Promise<Response> {
    try {
      return await fetch(this.baseUrl + path, { ...init, headers: { ...this.authHeader, ...(init.headers as Record<string, string> | undefined) } });
    } catch (e) {
      if (init.signal?.aborted) throw init.signal.reason; // the caller's abort, not the network
      const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
      throw new EmberdError(0, 'DAEMON_UNREACHABLE', `cannot reach emberd at ${this.baseUrl} (${cause}); is the daemon running? Start it with \`emberd\` (scripts/up in a checkout), or set --addr, EMBERD_URL or EMBERD_ADDR to the one that runs`);
    }
  }

  /** The JSON of a successful answer, or the daemon's error as an EmberdError. */
  private async answer<T>(res: Response): Promise<T> {
    const text = await res.text();
    let json: unknown;
    try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new EmberdError(res.status, err?.code ?? 'HTTP_ERROR', err?.message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`);
    }
    return json as T;
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.fetchRaw(path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return undefined as T;
    return this.answer<T>(res);
  }
}
