// E2B processes of one sandbox: what envd's process.Process service starts, numbered as E2B
// numbers them (a pid per process; these are emberd's numbers, not guest pids). A process outlives
// the request that started it (E2B's background commands, Connect, SendSignal from another
// client): its output goes to whoever follows it at the time, and a follower that is slow holds
// the process's output back (the exec is paced by the slowest follower); with nobody following,
// output is dropped.
//
// Without stdin a process is the manager's streamed exec (execStream). With stdin (StartRequest
// stdin: true) it is a background process (startProcess), the only kind whose stdin stays open;
// its output is polled from the manager's buffer (POLL_MS), which is bounded by --exec-output-cap.
// With `pty` (sandbox.pty.create) it is the manager's terminal (openPty): output comes as `pty`
// data, input goes to the terminal, Update resizes it; its credit goes back as followers take it.
import type { SandboxManager } from '../sandbox/manager.ts';
import type { BackgroundProcess } from '../sandbox/processes.ts';
import type { ExecEventStream } from '../sandbox/exec-stream.ts';
import type { PtySession } from '../sandbox/pty.ts';
import { EmberdError, isEmberdError } from '../errors.ts';

export interface ProcessConfig { cmd: string; args: string[]; envs: Record<string, string>; cwd?: string }

export interface EndInfo { exitCode: number; exited: boolean; status: string; error?: string }

export type ProcEvent = { kind: 'stdout' | 'stderr' | 'pty'; data: Buffer } | { kind: 'end'; end: EndInfo };

/** How often a stdin-mode process's buffered output is polled. */
const POLL_MS = 50;
/** Events a follower may have unread before the process's output waits for it. */
const FOLLOWER_BACKLOG = 16;
const MAX_PROCESSES = 64;
const FIRST_PID = 1_000_001;

/** One client following a process: its events, in order, as an async iterator. */
export class Follower implements AsyncIterable<ProcEvent | undefined> {
  readonly queue: ProcEvent[] = [];
  private wake: (() => void) | undefined;
  private drained: (() => void) | undefined;
  closed = false;
  private readonly onClose: (f: Follower) => void;

  constructor(onClose: (f: Follower) => void) {
    this.onClose = onClose;
  }

  push(ev: ProcEvent): Promise<void> | undefined {
    if (this.closed) return undefined;
    this.queue.push(ev);
    this.wake?.();
    if (this.queue.length < FOLLOWER_BACKLOG) return undefined;
    return new Promise((r) => { this.drained = r; });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.drained?.();
    this.wake?.();
    this.onClose(this);
  }

  /** Events; `undefined` after `idleMs` without one (the caller sends a keepalive). */
  async *events(idleMs: number): AsyncGenerator<ProcEvent | undefined> {
    try {
      for (;;) {
        const ev = this.queue.shift();
        if (ev) {
          if (this.queue.length < FOLLOWER_BACKLOG) { this.drained?.(); this.drained = undefined; }
          yield ev;
          if (ev.kind === 'end') return;
          continue;
        }
        if (this.closed) return;
        let timer: NodeJS.Timeout | undefined;
        const idle = await new Promise<boolean>((r) => {
          this.wake = () => r(false);
          timer = setTimeout(() => r(true), idleMs);
        });
        clearTimeout(timer);
        this.wake = undefined;
        if (idle) yield undefined;
      }
    } finally {
      this.close();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<ProcEvent | undefined> {
    return this.events(30_000);
  }
}

type ProcessSource = { pty: PtySession } | { bg: BackgroundProcess } | { stream: ExecEventStream };

export class E2bProcess {
  ended: EndInfo | undefined;
  private readonly followers = new Set<Follower>();
  private stream: ExecEventStream | undefined;
  private bg: BackgroundProcess | undefined;
  private pty: PtySession | undefined;
  readonly pid: number;
  readonly config: ProcessConfig;
  readonly tag: string | undefined;
  private readonly manager: SandboxManager;
  private readonly sandboxId: string;
  private readonly onEnd: (p: E2bProcess) => void;

  /** What runs it: a terminal, a background process (it takes stdin), or an exec's stream. */
  static async run(manager: SandboxManager, sandboxId: string, config: ProcessConfig, stdin: boolean, timeoutMs: number, pty?: { rows: number; cols: number }): Promise<ProcessSource> {
    const params = { argv: [config.cmd, ...config.args], env: config.envs, cwd: config.cwd, timeoutMs };
    if (pty) return { pty: await manager.openPty(sandboxId, { ...pty, argv: params.argv, env: params.env, cwd: params.cwd }) };
    if (stdin) return { bg: await manager.startProcess(sandboxId, params) };
    return { stream: await manager.execStream(sandboxId, params) };
  }

  constructor(pid: number, config: ProcessConfig, tag: string | undefined, manager: SandboxManager, sandboxId: string, source: ProcessSource, timeoutMs: number, onEnd: (p: E2bProcess) => void) {
    this.pid = pid;
    this.config = config;
    this.tag = tag;
    this.manager = manager;
    this.sandboxId = sandboxId;
    this.onEnd = onEnd;
    if ('pty' in source) {
      this.pty = source.pty;
      void this.pumpPty(this.pty, timeoutMs);
    } else if ('bg' in source) {
      this.bg = source.bg;
      void this.poll(this.bg);
    } else {
      this.stream = source.stream;
      void this.pump(this.stream);
    }
  }

  get hasStdin(): boolean {
    return this.bg !== undefined;
  }

  /** A new follower, from now on (call before anything can be missed). */
  follow(): Follower {
    const f = new Follower((x) => this.followers.delete(x));
    if (this.ended) { f.queue.push({ kind: 'end', end: this.ended }); return f; }
    this.followers.add(f);
    return f;
  }

  signal(signo: number): void {
    if (this.ended) return;
    if (this.pty) this.pty.signal(signo); // SIGKILL: the guest kills the terminal's whole session
    else if (this.bg) this.manager.signalProcess(this.sandboxId, this.bg.id, signo);
    else this.stream!.handle!.signal(signo);
  }

  get isPty(): boolean {
    return this.pty !== undefined;
  }

  /** Keystrokes to a pty process (SendInput's `pty` input). */
  async writePty(data: Buffer): Promise<void> {
    if (!this.pty) throw new EmberdError('INVALID_REQUEST', `process ${this.pid} has no terminal; send its input as stdin (commands.sendStdin), or start one with sandbox.pty.create`);
    await this.pty.write(data);
  }

  resize(rows: number, cols: number): void {
    if (!this.pty) throw new EmberdError('INVALID_REQUEST', `process ${this.pid} has no terminal to resize; only sandbox.pty.create processes have one`);
    if (!this.ended) this.pty.resize(rows, cols);
  }

  async writeStdin(data: Buffer, eof = false): Promise<void> {
    if (this.pty) {
      if (eof) throw new EmberdError('INVALID_REQUEST', `process ${this.pid} is a terminal: its stdin does not close; send Ctrl-D ("\\x04") with sendInput to end a shell's input`);
      return this.writePty(data);
    }
    if (!this.bg) throw new EmberdError('INVALID_REQUEST', `process ${this.pid} was started without stdin; start it with stdin: true (commands.run(cmd, { stdin: true })) to write to it`);
    await this.manager.writeProcessStdin(this.sandboxId, this.bg.id, data, eof);
  }

  private async publish(ev: ProcEvent): Promise<void> {
    await Promise.all([...this.followers].map((f) => f.push(ev)));
  }

  private finish(end: EndInfo): void {
    if (this.ended) return;
    this.ended = end;
    for (const f of this.followers) f.push({ kind: 'end', end });
    this.onEnd(this);
  }

  private async pump(stream: ExecEventStream): Promise<void> {
    try {
      for await (const ev of stream as AsyncIterable<import('../sandbox/exec-stream.ts').ExecEvent>) {
        if (ev.type === 'stdout' || ev.type === 'stderr') await this.publish({ kind: ev.type, data: ev.data });
        else if (ev.type === 'exit') this.finish(endOf(ev.exit.exitCode, ev.exit.signal, ev.exit.timedOut));
        else if (ev.type === 'error') this.finish({ exitCode: -1, exited: false, status: 'error', error: ev.error.message });
      }
    } catch (e) {
      this.finish({ exitCode: -1, exited: false, status: 'error', error: (e as Error).message });
    }
    this.finish({ exitCode: -1, exited: false, status: 'error', error: 'the process ended without an exit status' });
  }

  /** A terminal: output credit goes back once every follower has room for it (the slowest paces it). */
  private async pumpPty(pty: PtySession, timeoutMs: number): Promise<void> {
    let timedOut = false;
    const timer = timeoutMs > 0 ? setTimeout(() => { timedOut = true; pty.kill(); }, timeoutMs) : undefined;
    pty.onData((data) => { void this.publish({ kind: 'pty', data }).then(() => pty.consumed(data.length)); });
    try {
      const x = await pty.exited;
      this.finish(endOf(x.exitCode, x.signal, timedOut));
    } catch (e) {
      this.finish({ exitCode: -1, exited: false, status: 'error', error: isEmberdError(e) ? e.message : String(e) });
    } finally {
      clearTimeout(timer);
    }
  }

  private async poll(started: BackgroundProcess): Promise<void> {
    const off = { stdout: 0, stderr: 0 };
    let bp = started;
    try {
      for (;;) {
        // A resume replaces the sandbox's process objects: follow the current one, by id.
        bp = this.manager.listProcesses(this.sandboxId).find((p) => p.id === started.id) ?? bp;
        let got = false;
        for (const stream of ['stdout', 'stderr'] as const) {
          const out = this.manager.readProcessOutput(this.sandboxId, bp.id, { stream, offset: off[stream], maxBytes: 64 << 10 });
          off[stream] = out.nextOffset;
          if (out.data.length) { got = true; await this.publish({ kind: stream, data: Buffer.from(out.data) }); }
        }
        if (!got && !bp.running) break;
        // waitProcess would resume a paused sandbox (or fail with SANDBOX_PAUSED): a follower must not do that.
        if (!got && this.manager.get(this.sandboxId).state !== 'ready') await new Promise((r) => setTimeout(r, POLL_MS));
        else if (!got) await this.manager.waitProcess(this.sandboxId, bp.id, POLL_MS);
      }
      const v = bp.view();
      this.finish(bp.error ? { exitCode: -1, exited: false, status: 'error', error: bp.error.message } : endOf(v.exit_code ?? -1, v.signal ?? 0, v.timed_out));
      await this.manager.removeProcess(this.sandboxId, bp.id).catch(() => {});
    } catch (e) {
      this.finish({ exitCode: -1, exited: false, status: 'error', error: isEmberdError(e) ? e.message : String(e) });
    }
  }
}

const SIGNAL_NAMES: Record<number, string> = { 1: 'hangup', 2: 'interrupt', 9: 'killed', 15: 'terminated' };

/** An exit as Go's os.ProcessState reports it (envd's EndEvent). */
function endOf(exitCode: number, signal: number, timedOut: boolean): EndInfo {
  if (signal) {
    return { exitCode: -1, exited: false, status: `signal: ${SIGNAL_NAMES[signal] ?? signal}`, ...(timedOut ? { error: 'the command ran past its timeout and was killed' } : {}) };
  }
  return { exitCode, exited: true, status: `exit status ${exitCode}` };
}

export class E2bProcessTable {
  private readonly procs = new Map<number, E2bProcess>();
  /** Above any guest pid, so a program that hands one to `kill` in the guest hits nothing (init is 1). */
  private next = FIRST_PID;
  private readonly manager: SandboxManager;
  private readonly sandboxId: string;

  constructor(manager: SandboxManager, sandboxId: string) {
    this.manager = manager;
    this.sandboxId = sandboxId;
  }

  async start(config: ProcessConfig, o: { tag?: string; stdin: boolean; timeoutMs: number; pty?: { rows: number; cols: number } }): Promise<E2bProcess> {
    if (this.procs.size >= MAX_PROCESSES) {
      throw new EmberdError('TOO_MANY_PROCESSES', `this sandbox already runs ${this.procs.size} E2B processes (the limit is ${MAX_PROCESSES}); kill some`);
    }
    const pid = this.next++;
    // What E2B's envd gives every process.
    const envs = { E2B_SANDBOX: 'true', E2B_SANDBOX_ID: this.sandboxId, ...config.envs };
    const source = await E2bProcess.run(this.manager, this.sandboxId, { ...config, envs }, o.stdin, o.timeoutMs, o.pty);
    const p = new E2bProcess(pid, { ...config, envs }, o.tag, this.manager, this.sandboxId, source, o.timeoutMs, (x) => this.procs.delete(x.pid));
    if (!p.ended) this.procs.set(pid, p);
    return p;
  }

  list(): E2bProcess[] {
    return [...this.procs.values()];
  }

  find(sel: { pid?: number; tag?: string }): E2bProcess | undefined {
    if (sel.pid !== undefined) return this.procs.get(sel.pid);
    return this.list().find((p) => p.tag === sel.tag);
  }

  /** The sandbox is gone: its processes went with it. */
  close(): void {
    this.procs.clear();
  }
}
