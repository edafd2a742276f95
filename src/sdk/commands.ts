// sb.commands: shell command lines run with `bash -l -c` in the sandbox, in the foreground (the
// answer once it exits) or in the background (a handle over the daemon's background-process API).
import type { EmberdClient, ExecOptions } from './client.ts';
import { gatherRun } from './run-stream.ts';

export interface CommandOptions {
  cwd?: string;
  /** Added to the sandbox's environment for this command. */
  env?: Record<string, string>;
  /** Text or bytes for its stdin (else it reads EOF; a background process keeps stdin open). */
  stdin?: string | Uint8Array;
  /** Kill its whole process group after this long (exitCode 137, timedOut true); default the daemon's --exec-timeout. */
  timeoutMs?: number;
  /** Output as it comes (foreground runs; the result has all of it too). */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  /** Aborting kills the command; the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** How a command ended. A non-zero exitCode is an answer, not an error. */
export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  durationMs: number;
  timedOut: boolean;
  /** Output past the daemon's --exec-output-cap was dropped. */
  truncated: boolean;
}

export class Commands {
  private readonly client: EmberdClient;
  private readonly sandboxId: string;

  constructor(client: EmberdClient, sandboxId: string) {
    this.client = client;
    this.sandboxId = sandboxId;
  }

  /** Runs `cmd` with `bash -l -c` and answers once it exits; with `background: true`, at once with a handle. */
  run(cmd: string, opts: CommandOptions & { background: true }): Promise<CommandHandle>;
  run(cmd: string, opts?: CommandOptions & { background?: false }): Promise<CommandResult>;
  async run(cmd: string, opts: CommandOptions & { background?: boolean } = {}): Promise<CommandResult | CommandHandle> {
    const req: ExecOptions = {
      argv: ['bash', '-l', '-c', cmd],
      env: opts.env,
      cwd: opts.cwd,
      timeout_ms: opts.timeoutMs,
      ...stdinField(opts.stdin),
    };
    if (opts.background) return new CommandHandle(this.client, this.sandboxId, await this.client.startProcess(this.sandboxId, req));
    if (opts.onStdout || opts.onStderr || opts.signal) {
      const { results: _r, value: _v, sessionReset: _s, ...r } = await gatherRun(this.client.execStream(this.sandboxId, req, { signal: opts.signal }), opts);
      return r;
    }
    return commandResult(await this.client.exec(this.sandboxId, req));
  }

  /** A handle on a background process started earlier (by its id). */
  connect(processId: string): CommandHandle {
    return new CommandHandle(this.client, this.sandboxId, processId);
  }
}

/** A background process: its output so far, its stdin, signals, and its end. */
export class CommandHandle {
  readonly id: string;
  private readonly client: EmberdClient;
  private readonly sandboxId: string;

  constructor(client: EmberdClient, sandboxId: string, processId: string) {
    this.client = client;
    this.sandboxId = sandboxId;
    this.id = processId;
  }

  /** Waits until it exits (long polls of at most `pollMs`), then answers with all its output. */
  async wait({ pollMs = 30_000 }: { pollMs?: number } = {}): Promise<CommandResult> {
    let p = await this.client.waitProcess(this.sandboxId, this.id, pollMs);
    while (p.state === 'running') p = await this.client.waitProcess(this.sandboxId, this.id, pollMs);
    const out = await this.output();
    return { ...out, exitCode: p.exit_code ?? -1, durationMs: p.duration_ms ?? 0, timedOut: p.timed_out, truncated: p.truncated };
  }

  /** Everything it wrote so far (the daemon keeps up to --exec-output-cap of it). */
  async output(): Promise<{ stdout: string; stderr: string }> {
    const [stdout, stderr] = await Promise.all([this.readAll('stdout'), this.readAll('stderr')]);
    return { stdout, stderr };
  }

  /** Is it still running? */
  async running(): Promise<boolean> {
    return (await this.client.getProcess(this.sandboxId, this.id)).state === 'running';
  }

  /** Writes to its stdin; `eof` closes it. */
  sendStdin(data: string | Uint8Array | undefined, opts: { eof?: boolean } = {}): Promise<void> {
    return this.client.writeProcessStdin(this.sandboxId, this.id, data, opts);
  }

  /** Signals its whole process group (default SIGKILL); `wait()` then answers how it ended. */
  kill(signal: string | number = 'SIGKILL'): Promise<void> {
    return this.client.signalProcess(this.sandboxId, this.id, signal);
  }

  /** Bytes are read as base64 and decoded once, so a character split between reads stays whole. */
  private async readAll(stream: 'stdout' | 'stderr'): Promise<string> {
    const chunks: Buffer[] = [];
    let offset = 0;
    for (;;) {
      const o = await this.client.readProcessOutput(this.sandboxId, this.id, { stream, offset, max_bytes: 16 << 20, output_encoding: 'base64' });
      if (o.data) chunks.push(Buffer.from(o.data, 'base64'));
      if (o.eof || o.next_offset === offset) break;
      offset = o.next_offset;
    }
    return Buffer.concat(chunks).toString('utf8');
  }
}

export function stdinField(stdin: string | Uint8Array | undefined): Pick<ExecOptions, 'stdin' | 'stdin_base64'> {
  if (stdin === undefined) return {};
  return typeof stdin === 'string' ? { stdin } : { stdin_base64: Buffer.from(stdin).toString('base64') };
}

function commandResult(r: { stdout: string; stderr: string; exit_code: number; duration_ms: number; timed_out: boolean; truncated: boolean }): CommandResult {
  return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exit_code, durationMs: r.duration_ms, timedOut: r.timed_out, truncated: r.truncated };
}
