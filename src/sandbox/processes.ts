// Background processes of one sandbox: started with `background: true`, they run while the caller
// polls their buffered output, writes their stdin, signals them and waits for them.
import { randomBytes } from 'node:crypto';
import type { AgentClient, ExecCallbacks, ExecHandle, ExecRequest, ExitInfo } from '../agent/client.ts';
import { EmberdError } from '../errors.ts';
import { settlesWithin } from '../settles-within.ts';
import type { ChannelOwner } from './sessions.ts';

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

/** A background process as a paused sandbox keeps it: its output so far, and its channel while it runs. */
export interface SavedProcess {
  id: string;
  started_at: string;
  command: string;
  cap: number;
  /** base64 */
  stdout: string;
  stderr: string;
  truncated: boolean;
  exit: ExitInfo | null;
  error: string | null;
  /** The exec's channel while it runs (its flow control is in the agent's saved state). */
  channel: number | null;
}

export class BackgroundProcess {
  readonly id: string;
  readonly startedAt: Date;
  readonly command: string;
  private handle: ExecHandle | undefined;
  private readonly cap: number;
  private readonly out = { stdout: new OutputLog(), stderr: new OutputLog() };
  exit: ExitInfo | undefined;
  error: Error | undefined;
  private truncatedHere = false;

  /** Starts `req` on `agent`, or (`saved`) takes back a process of a resumed sandbox. */
  constructor(cap: number, start: { agent: AgentClient; req: ExecRequest } | { saved: SavedProcess }) {
    this.cap = cap;
    if ('saved' in start) {
      const s = start.saved;
      this.id = s.id;
      this.startedAt = new Date(s.started_at);
      this.command = s.command;
      this.out.stdout.append(Buffer.from(s.stdout, 'base64'));
      this.out.stderr.append(Buffer.from(s.stderr, 'base64'));
      this.truncatedHere = s.truncated;
      this.exit = s.exit ?? undefined;
      if (s.error !== null) this.error = new Error(s.error);
      return;
    }
    this.id = `p_${randomBytes(8).toString('hex')}`;
    this.startedAt = new Date();
    this.command = start.req.argv ? start.req.argv.join(' ') : (start.req.code ?? '');
    this.attach(start.agent.exec({ ...start.req, stdinOpen: true }, this.callbacks()));
  }

  /** What its exec's output goes through: kept up to the cap (stdout and stderr together). */
  callbacks(): ExecCallbacks {
    const keep = (log: OutputLog) => (b: Buffer) => {
      const room = this.cap - this.out.stdout.length - this.out.stderr.length;
      if (b.length > room) this.truncatedHere = true;
      if (room > 0) log.append(b.length > room ? b.subarray(0, room) : b);
    };
    return { onStdout: keep(this.out.stdout), onStderr: keep(this.out.stderr) };
  }

  /** Binds the process to its exec (a new one, or one adopted on a resumed guest). */
  attach(handle: ExecHandle): void {
    this.handle = handle;
    handle.exited.then((e) => { if (this.handle === handle) this.exit = e; }, (e: Error) => { if (this.handle === handle) this.error = e; });
  }

  /** Its channel while it runs; undefined once it has exited. */
  get channel(): number | undefined {
    return this.running ? this.handle?.channel : undefined;
  }

  /** Stdin it was given that the guest has not taken yet (a pause waits for none). */
  get stdinPending(): boolean {
    return this.running && !!this.handle?.stdinPending;
  }

  save(): SavedProcess {
    return {
      id: this.id,
      started_at: this.startedAt.toISOString(),
      command: this.command,
      cap: this.cap,
      stdout: this.out.stdout.read(0, Infinity).toString('base64'),
      stderr: this.out.stderr.read(0, Infinity).toString('base64'),
      truncated: this.truncatedHere,
      exit: this.exit ?? null,
      error: this.error?.message ?? null,
      channel: this.channel ?? null,
    };
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
    if (!this.running || !this.handle) throw new EmberdError('PROCESS_EXITED', `process ${this.id} has exited; it reads no more input`);
    if (data?.length) await this.handle.writeStdin(data);
    if (eof) this.handle.closeStdin();
  }

  /** Signals the process's whole group. */
  signal(signo: number): void {
    if (this.running) this.handle?.signal(signo);
  }

  /** Waits until the process exits or `timeoutMs` passes. */
  async wait(timeoutMs: number): Promise<void> {
    if (this.running && this.handle) await settlesWithin(this.handle.exited, timeoutMs);
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
    const p = new BackgroundProcess(cap, { agent, req });
    this.procs.set(p.id, p);
    return p;
  }

  /** Every process, for a paused sandbox's record. */
  save(): SavedProcess[] {
    return this.list().map((p) => p.save());
  }

  /**
   * The saved processes of a resumed guest replace this table's; the running ones are bound to
   * their channels when the agent adopts them (ChannelOwner.attach).
   */
  revive(saved: SavedProcess[]): ChannelOwner[] {
    this.procs.clear();
    const owners: ChannelOwner[] = [];
    for (const s of saved) {
      const p = new BackgroundProcess(s.cap, { saved: s });
      this.procs.set(s.id, p);
      if (s.channel !== null && !s.exit && s.error === null) owners.push({ channel: s.channel, callbacks: () => p.callbacks(), attach: (h) => p.attach(h), lost: (e) => { p.error = e; } });
    }
    return owners;
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
