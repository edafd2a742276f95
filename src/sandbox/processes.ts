// Background processes of one sandbox: started with `background: true`, they run while the caller
// polls their buffered output, writes their stdin, signals them and waits for them.
import { randomBytes } from 'node:crypto';
import type { AgentClient, ExecHandle, ExecRequest, ExitInfo } from '../agent/client.ts';
import { EmberdError } from '../errors.ts';
import { settlesWithin } from '../settles-within.ts';

export type StreamName = 'stdout' | 'stderr';

/** Output kept for polling, bounded: bytes past `cap` (stdout+stderr) are dropped and flagged. */
class OutputLog {
  private chunks: Buffer[] = [];
  length = 0;

  append(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  read(offset: number, max: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = [all];
    return all.subarray(offset, offset + max);
  }
}

/** A slice of a background process's buffered output. */
export interface ProcessOutput {
  data: Buffer;
  /** Where the next read continues. */
  nextOffset: number;
  /** The process has exited and everything it wrote was read. */
  eof: boolean;
  truncated: boolean;
}

export interface ProcessView {
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

export class BackgroundProcess {
  readonly id = `p_${randomBytes(8).toString('hex')}`;
  readonly startedAt = new Date();
  readonly command: string;
  private readonly handle: ExecHandle;
  private readonly out = { stdout: new OutputLog(), stderr: new OutputLog() };
  exit: ExitInfo | undefined;
  error: Error | undefined;
  private truncatedHere = false;

  constructor(agent: AgentClient, req: ExecRequest, cap: number) {
    this.command = req.argv ? req.argv.join(' ') : (req.code ?? '');
    const keep = (log: OutputLog) => (b: Buffer) => {
      const room = cap - this.out.stdout.length - this.out.stderr.length;
      if (b.length > room) this.truncatedHere = true;
      if (room > 0) log.append(b.length > room ? b.subarray(0, room) : b);
    };
    this.handle = agent.exec({ ...req, stdinOpen: true }, { onStdout: keep(this.out.stdout), onStderr: keep(this.out.stderr) });
    this.handle.exited.then((e) => { this.exit = e; }, (e: Error) => { this.error = e; });
  }

  get running(): boolean {
    return this.exit === undefined && this.error === undefined;
  }

  view(): ProcessView {
    const e = this.exit;
    return {
      process_id: this.id,
      state: this.running ? 'running' : 'exited',
      started_at: this.startedAt.toISOString(),
      command: this.command.length > 200 ? `${this.command.slice(0, 200)}...` : this.command,
      exit_code: e ? e.exitCode : this.error ? -1 : null,
      signal: e ? e.signal || null : null,
      timed_out: e?.timedOut ?? false,
      truncated: (e?.truncated ?? false) || this.truncatedHere,
      duration_ms: e ? Math.round(e.durationUs / 1000) : null,
      stdout_bytes: this.out.stdout.length,
      stderr_bytes: this.out.stderr.length,
    };
  }

  /** Up to `max` bytes of `stream` from `offset` (an offset past the end reads nothing). */
  read(stream: StreamName, offset: number, max: number): ProcessOutput {
    const log = this.out[stream];
    const data = log.read(offset, max);
    const nextOffset = Math.min(offset, log.length) + data.length;
    return { data, nextOffset, eof: !this.running && nextOffset >= log.length, truncated: this.view().truncated };
  }

  /** Writes `data` to the process's stdin (under the guest's credit), then closes it if `eof`. */
  async writeStdin(data: Buffer | undefined, eof: boolean): Promise<void> {
    if (!this.running) throw new EmberdError('PROCESS_EXITED', `process ${this.id} has exited; it reads no more input`);
    if (data?.length) await this.handle.writeStdin(data);
    if (eof) this.handle.closeStdin();
  }

  /** Signals the process's whole group. */
  signal(signo: number): void {
    this.handle.signal(signo);
  }

  /** Waits until the process exits or `timeoutMs` passes. */
  async wait(timeoutMs: number): Promise<void> {
    await settlesWithin(this.handle.exited, timeoutMs);
  }
}

export class ProcessTable {
  private readonly procs = new Map<string, BackgroundProcess>();
  static readonly MAX = 64;

  start(agent: AgentClient, req: ExecRequest, cap: number): BackgroundProcess {
    const running = [...this.procs.values()].filter((p) => p.running).length;
    if (running >= ProcessTable.MAX) {
      throw new EmberdError('TOO_MANY_PROCESSES', `this sandbox already runs ${running} background processes (the limit is ${ProcessTable.MAX}); wait for or delete some`);
    }
    const p = new BackgroundProcess(agent, req, cap);
    this.procs.set(p.id, p);
    return p;
  }

  list(): BackgroundProcess[] {
    return [...this.procs.values()];
  }

  get(id: string): BackgroundProcess {
    const p = this.procs.get(id);
    if (!p) throw new EmberdError('PROCESS_NOT_FOUND', `background process ${id} does not exist in this sandbox; list them with GET /sandboxes/{id}/processes`);
    return p;
  }

  /** Kills the process if it still runs, and forgets it. */
  async remove(id: string): Promise<void> {
    const p = this.get(id);
    if (p.running) {
      p.signal(9);
      await p.wait(10_000);
    }
    this.procs.delete(id);
  }
}
