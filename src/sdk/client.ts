// TypeScript SDK for the emberd HTTP API. The CLI and the MCP server are built on it.

export interface SandboxSummary {
  id: string;
  state: 'creating' | 'ready' | 'destroying' | 'gone' | 'failed';
  language_pack: string;
  backend: string;
  created_at: string;
  boot_ms: number | null;
  boot_mode: 'cold' | 'restore' | 'pool' | null;
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
  timeout_ms?: number;
}

export interface ExecResponse {
  stdout: string;
  stderr: string;
  exit_code: number;
  duration_ms: number;
  timed_out: boolean;
  truncated: boolean;
}

/** An error answered by the daemon: match on `code` (stable), show `message` (says what to do). */
export class EmberdApiError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'EmberdApiError';
    this.status = status;
    this.code = code;
  }
}

export class EmberdClient {
  readonly baseUrl: string;

  constructor(addr: string = process.env.EMBERD_ADDR ?? '127.0.0.1:7777') {
    this.baseUrl = /^https?:\/\//.test(addr) ? addr.replace(/\/$/, '') : `http://${addr}`;
  }

  info(): Promise<Record<string, unknown>> {
    return this.request('GET', '/');
  }

  createSandbox(opts: { language_pack?: string } = {}): Promise<SandboxSummary> {
    return this.request('POST', '/sandboxes', opts);
  }

  async listSandboxes(): Promise<SandboxSummary[]> {
    return (await this.request<{ sandboxes: SandboxSummary[] }>('GET', '/sandboxes')).sandboxes;
  }

  getSandbox(id: string): Promise<SandboxDetails> {
    return this.request('GET', `/sandboxes/${encodeURIComponent(id)}`);
  }

  exec(id: string, opts: ExecOptions): Promise<ExecResponse> {
    return this.request('POST', `/sandboxes/${encodeURIComponent(id)}/exec`, opts);
  }

  async deleteSandbox(id: string): Promise<void> {
    await this.request('DELETE', `/sandboxes/${encodeURIComponent(id)}`);
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
      throw new EmberdApiError(0, 'DAEMON_UNREACHABLE', `cannot reach emberd at ${this.baseUrl} (${cause}); is the daemon running? Set --addr or EMBERD_ADDR`);
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown;
    try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new EmberdApiError(res.status, err?.code ?? 'HTTP_ERROR', err?.message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`);
    }
    return json as T;
  }
}
