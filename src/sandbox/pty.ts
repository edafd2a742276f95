// An interactive terminal in a sandbox: one exec on a guest pseudo-terminal (docs/protocol.md,
// "PTY"). Whatever carries it (the WebSocket route, E2B's process API) writes keystrokes, resizes
// and reads the terminal's output; output credit goes back to the guest only as the consumer says
// it has passed the bytes on, so a shell flooding a slow client blocks in the guest instead of
// filling the daemon's memory.
import type { AgentClient, ExecHandle, ExitInfo } from '../agent/client.ts';
import { EmberdError } from '../errors.ts';

export interface PtyOptions {
  rows: number;
  cols: number;
  /** The program and its arguments; default a login shell (bash if the pack has it, else sh). */
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
}

/** The terminal's size limits: what the guest's TIOCSWINSZ (u16) takes. */
export const PTY_MAX_SIZE = 65535;

export const DEFAULT_SHELL = ['/bin/sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi'];

export function checkPtySize(rows: number, cols: number): void {
  for (const [name, v] of [['rows', rows], ['cols', cols]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > PTY_MAX_SIZE) {
      throw new EmberdError('INVALID_REQUEST', `${name} must be an integer from 1 to ${PTY_MAX_SIZE}, not ${v}`);
    }
  }
}

export class PtySession {
  readonly exited: Promise<ExitInfo>;
  private readonly handle: ExecHandle;
  private listener: ((chunk: Buffer) => void) | undefined;
  private early: Buffer[] = [];

  constructor(agent: AgentClient, o: PtyOptions) {
    checkPtySize(o.rows, o.cols);
    // An older agent skips EXEC's tty field and would run the shell on pipes: refuse instead.
    if (!agent.capabilities.includes('pty')) {
      throw new EmberdError('AGENT_VERSION_MISMATCH', 'this sandbox\'s guest agent has no terminal support (no `pty` capability); rebuild the images with `emberd images build --force`');
    }
    this.handle = agent.exec(
      { argv: o.argv ?? DEFAULT_SHELL, env: o.env, cwd: o.cwd, stdinOpen: true, tty: { rows: o.rows, cols: o.cols } },
      {
        manualCredit: true,
        onStdout: (b) => { if (this.listener) this.listener(b); else this.early.push(b); },
        // A tty exec writes no stderr frames; a guest that does anyway has them shown as output.
        onStderr: (b) => { if (this.listener) this.listener(b); else this.early.push(b); },
      },
    );
    this.exited = this.handle.exited;
  }

  /**
   * Where the terminal's output goes. Each chunk must be handed back with consumed(n) once it has
   * left the daemon (output buffered before a listener was set is delivered to it first).
   */
  onData(fn: (chunk: Buffer) => void): void {
    this.listener = fn;
    const early = this.early;
    this.early = [];
    for (const b of early) fn(b);
  }

  /** `n` bytes of output were passed on: the guest may send that much more. */
  consumed(n: number): void {
    this.handle.grant(n);
  }

  /** Keystrokes (bytes) to the terminal; resolves once the guest has credit for them. */
  write(data: Buffer): Promise<void> {
    if (data.length === 0 || this.handle.settled) return Promise.resolve();
    return this.handle.writeStdin(data).catch(() => {});
  }

  resize(rows: number, cols: number): void {
    checkPtySize(rows, cols);
    this.handle.resize(rows, cols);
  }

  signal(signo: number): void {
    this.handle.signal(signo);
  }

  /** SIGKILL the terminal's session (the guest kills every process of it, jobs included). */
  kill(): void {
    this.handle.signal(9);
  }

  get ended(): boolean {
    return this.handle.settled;
  }
}
