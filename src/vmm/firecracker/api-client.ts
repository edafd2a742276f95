// HTTP/1.1 over Firecracker's API Unix socket, with undici (one kept-alive connection, one request
// at a time, as Firecracker's API thread serves them). Every request is published on the
// `emberd:firecracker:api` diagnostics channel ({ socketPath, method, path, body, status,
// response, ms }) so tests can check what the driver sent against the official spec.
import { channel } from 'node:diagnostics_channel';
import { Client } from 'undici';
import { FirecrackerError } from './errors.ts';

export const API_CHANNEL = channel('emberd:firecracker:api');

export interface ApiEvent {
  socketPath: string;
  method: string;
  path: string;
  body?: unknown;
  status?: number;
  response?: unknown;
  error?: string;
  ms: number;
}

export interface ApiResponse<T = unknown> { status: number; body: T }

export class FirecrackerApiClient {
  readonly socketPath: string;
  private readonly client: Client;
  private readonly timeoutMs: number;

  constructor(socketPath: string, opts: { timeoutMs?: number } = {}) {
    this.socketPath = socketPath;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.client = new Client('http://localhost', {
      socketPath,
      pipelining: 1,
      connectTimeout: this.timeoutMs,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      keepAliveTimeout: 60_000,
    });
  }

  /** Sends one request; a status >= 300 becomes FIRECRACKER_API_ERROR carrying fault_message. */
  async request<T = unknown>(method: 'GET' | 'PUT' | 'PATCH', path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<ApiResponse<T>> {
    const started = Date.now();
    const event: ApiEvent = { socketPath: this.socketPath, method, path, ms: 0 };
    if (body !== undefined) event.body = body;
    try {
      const res = await this.client.request({
        method,
        path,
        headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.body.text();
      let parsed: unknown;
      try { parsed = text ? JSON.parse(text) : undefined; } catch { parsed = text; }
      event.status = res.statusCode;
      if (parsed !== undefined) event.response = parsed;
      if (res.statusCode >= 300) {
        const fault = (parsed as { fault_message?: unknown } | undefined)?.fault_message;
        throw new FirecrackerError('FIRECRACKER_API_ERROR', `Firecracker refused ${method} ${path} (HTTP ${res.statusCode}): ${typeof fault === 'string' ? fault : text || 'no fault_message'}`);
      }
      return { status: res.statusCode, body: parsed as T };
    } catch (e) {
      if (e instanceof FirecrackerError) { event.error = e.message; throw e; }
      const err = e as Error & { code?: string };
      event.error = err.message;
      const timedOut = err.name === 'TimeoutError' || err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_CONNECT_TIMEOUT';
      throw new FirecrackerError(timedOut ? 'FIRECRACKER_API_TIMEOUT' : 'FIRECRACKER_API_ERROR', `${method} ${path} on ${this.socketPath} failed: ${timedOut ? `no answer within ${timeoutMs} ms` : err.message}`, { cause: e });
    } finally {
      event.ms = Date.now() - started;
      if (API_CHANNEL.hasSubscribers) API_CHANNEL.publish(event);
    }
  }

  get<T = unknown>(path: string, timeoutMs?: number): Promise<ApiResponse<T>> {
    return this.request<T>('GET', path, undefined, timeoutMs);
  }

  put(path: string, body: unknown, timeoutMs?: number): Promise<ApiResponse> {
    return this.request('PUT', path, body, timeoutMs);
  }

  patch(path: string, body: unknown, timeoutMs?: number): Promise<ApiResponse> {
    return this.request('PATCH', path, body, timeoutMs);
  }

  /** Drops the connection without waiting (the process may already be gone). */
  close(): void {
    this.client.destroy().catch(() => {});
  }
}
