// The Sandbox class, the `emberd` package's main API (docs/sdk.md): one microVM on a running
// daemon, its code runs, commands and files, and its lifetime (`await using` kills it).
import { EmberdClient, EmberdError, type SandboxSummary } from './client.ts';
import { Commands, stdinField } from './commands.ts';
import { Files } from './files.ts';
import { Ports } from './ports.ts';
import { gatherRun, type GatheredRun, type StreamCallbacks } from './run-stream.ts';

/** Which daemon, with which credentials. */
export interface ConnectionOptions {
  /** "host:port" or an http(s) URL; default EMBERD_URL, else EMBERD_ADDR, else 127.0.0.1:7777. */
  url?: string;
  /** Bearer token; default EMBERD_TOKEN, else the daemon's token file when readable; null: none. */
  token?: string | null;
  /** Read the token from this file (default EMBERD_TOKEN_FILE, else the daemon's default path). */
  tokenFile?: string;
}

/** What a new sandbox gets; everything defaults to the daemon's flags. */
export interface SandboxCreateOptions extends ConnectionOptions {
  /** Language pack: python, shell, node, python-data or a custom one (GET /packs). */
  pack?: string;
  vcpus?: number;
  memoryMib?: number;
  /** The writable disk (RAM-backed) in MiB. */
  diskMib?: number;
  /** Processes + threads its commands may have; 0: the guest's ceiling. */
  pidsMax?: number;
  /** Seconds until the daemon destroys it (default its --sandbox-timeout, an hour); 0: never, if allowed. */
  timeoutS?: number;
  /** Variables every command and code run inherits. */
  env?: Record<string, string>;
  /** At the deadline: 'destroy' it (default) or 'pause' it (kept on disk, resumable). */
  onTimeout?: 'destroy' | 'pause';
  /** Calls on it while paused resume it first (default true); false: they fail with SANDBOX_PAUSED. */
  autoResume?: boolean;
}

export interface SandboxInfo {
  id: string;
  state: SandboxSummary['state'];
  pack: string;
  backend: string;
  createdAt: string;
  /** When the daemon destroys it; null: never. */
  expiresAt: string | null;
  bootMs: number | null;
  bootMode: SandboxSummary['boot_mode'];
  vcpus: number;
  memoryMib: number;
  diskMib: number | null;
  env: Record<string, string>;
  onTimeout: SandboxSummary['on_timeout'];
  autoResume: boolean;
  /** While paused: when, its size on disk, how long the pause took, when it is deleted (null: never). */
  paused: { pausedAt: string; bytes: number; pauseMs: number; expiresAt: string | null } | null;
  /** The sandbox it was forked from; null: not a fork. */
  forkedFrom: string | null;
}

export interface RunCodeOptions extends StreamCallbacks {
  /** Run in this persistent interpreter (python packs): variables and imports survive between runs. */
  session?: string;
  /** Interrupt after this long (a session gets KeyboardInterrupt and keeps its state). */
  timeoutMs?: number;
  /** Text or bytes for the code's stdin. */
  stdin?: string | Uint8Array;
  /** Aborting kills the run (interrupts a session cell); the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What runCode answers, whole or gathered from the stream (run-stream.ts). */
export type RunCodeResult = GatheredRun;

export class Sandbox implements AsyncDisposable {
  readonly id: string;
  readonly pack: string;
  /** The low-level client this sandbox talks through (every endpoint, the daemon's shapes). */
  readonly client: EmberdClient;
  readonly commands: Commands;
  readonly files: Files;
  /** Servers in the sandbox reached from the host through the daemon (expose, list, close). */
  readonly ports: Ports;
  private killed = false;

  private constructor(client: EmberdClient, summary: SandboxSummary) {
    this.client = client;
    this.id = summary.id;
    this.pack = summary.language_pack;
    this.commands = new Commands(client, this.id);
    this.files = new Files(client, this.id);
    this.ports = new Ports(client, this.id);
  }

  /** Boots a sandbox; answers once it serves. */
  static async create(opts: SandboxCreateOptions = {}): Promise<Sandbox> {
    const client = clientFor(opts);
    const summary = await client.createSandbox({
      language_pack: opts.pack, vcpus: opts.vcpus, memory_mib: opts.memoryMib, disk_mib: opts.diskMib,
      pids_max: opts.pidsMax, timeout_s: opts.timeoutS, env: opts.env, on_timeout: opts.onTimeout, auto_resume: opts.autoResume,
    });
    return new Sandbox(client, summary);
  }

  /** A sandbox that already runs (created here or elsewhere); SANDBOX_NOT_FOUND if none has that id. */
  static async connect(id: string, opts: ConnectionOptions = {}): Promise<Sandbox> {
    const client = clientFor(opts);
    return new Sandbox(client, await client.getSandbox(id));
  }

  /** Every sandbox of the daemon. */
  static async list(opts: ConnectionOptions = {}): Promise<SandboxInfo[]> {
    return (await clientFor(opts).listSandboxes()).map(toInfo);
  }

  async info(): Promise<SandboxInfo> {
    return toInfo(await this.client.getSandbox(this.id));
  }

  /**
   * Runs `code` with the pack's interpreter (python3, node, sh), or in a persistent session.
   * Callbacks or a signal make it a streamed run: output reaches them as it happens.
   */
  async runCode(code: string, opts: RunCodeOptions = {}): Promise<RunCodeResult> {
    const req = {
      code,
      session: opts.session,
      timeout_ms: opts.timeoutMs,
      ...stdinField(opts.stdin),
    };
    if (opts.onStdout || opts.onStderr || opts.onResult || opts.signal) {
      return gatherRun(this.client.execStream(this.id, req, { signal: opts.signal }), opts);
    }
    const r = await this.client.exec(this.id, req);
    return {
      stdout: r.stdout, stderr: r.stderr, exitCode: r.exit_code, durationMs: r.duration_ms, timedOut: r.timed_out,
      truncated: r.truncated, results: r.results ?? [], value: r.value ?? null, sessionReset: r.session_reset ?? false,
    };
  }

  /**
   * The URL to fetch a server listening on `port` in the sandbox, exposing the port first if it is
   * not (the server need not be up yet): `http://127.0.0.1:7777/sandboxes/{id}/ports/8000/`, the
   * server's `/` being that URL. Unlike E2B's getHost (synchronous, a host name without scheme),
   * it is async and answers a whole URL with a path, which every HTTP client resolves; the daemon's
   * auth applies to it. The host-name form `8000-{id}.localhost:7777` also works where *.localhost
   * resolves to loopback (browsers, curl).
   */
  async getHost(port: number): Promise<string> {
    return (await this.ports.expose(port)).url;
  }

  /** The daemon destroys it `seconds` from now (0: never, if the daemon allows it). */
  async setTimeout(seconds: number): Promise<SandboxInfo> {
    return toInfo(await this.client.setTimeout(this.id, seconds));
  }

  /**
   * Saves it whole (memory, files, processes, sessions) to the daemon's disk and ends its VM: no
   * CPU or memory until it resumes, on resume() or (unless autoResume is false) on the next call.
   * SANDBOX_BUSY while a command, code run or file transfer runs in it.
   */
  async pause(): Promise<SandboxInfo> {
    return toInfo(await this.client.pauseSandbox(this.id));
  }

  /** Brings it back as it was; `timeoutS` gives it a new lifetime from now. A running one stays as is. */
  async resume(opts: { timeoutS?: number } = {}): Promise<SandboxInfo> {
    return toInfo(await this.client.resumeSandbox(this.id, { timeout_s: opts.timeoutS }));
  }

  /**
   * `count` (1-16) new sandboxes, each starting from this one's state now (memory, files,
   * sessions, background processes) and independent afterwards; this one goes on running.
   * Each must be killed on its own.
   */
  async fork(count = 1): Promise<Sandbox[]> {
    return (await this.client.forkSandbox(this.id, { count })).map((s) => new Sandbox(this.client, s));
  }

  /** Destroys the VM and its files. false when it was already gone (killed, expired). */
  async kill(): Promise<boolean> {
    try {
      await this.client.deleteSandbox(this.id);
      this.killed = true;
      return true;
    } catch (e) {
      if (!(e instanceof EmberdError && e.code === 'SANDBOX_NOT_FOUND')) throw e;
      this.killed = true;
      return false;
    }
  }

  /** `await using sb = await Sandbox.create()` kills it when the block ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.killed) await this.kill();
  }
}

function clientFor(o: ConnectionOptions): EmberdClient {
  return new EmberdClient(o.url, { token: o.token, tokenFile: o.tokenFile });
}

function toInfo(s: SandboxSummary): SandboxInfo {
  return {
    id: s.id, state: s.state, pack: s.language_pack, backend: s.backend, createdAt: s.created_at, expiresAt: s.expires_at,
    bootMs: s.boot_ms, bootMode: s.boot_mode, vcpus: s.vcpus, memoryMib: s.memory_mib, diskMib: s.disk_mib, env: s.env,
    onTimeout: s.on_timeout, autoResume: s.auto_resume, forkedFrom: s.forked_from,
    paused: s.paused && { pausedAt: s.paused.paused_at, bytes: s.paused.bytes, pauseMs: s.paused.pause_ms, expiresAt: s.paused.expires_at },
  };
}
