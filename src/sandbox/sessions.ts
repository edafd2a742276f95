// Persistent interpreter sessions of one sandbox (docs/api.md, "Sessions"). No HTTP here: the
// manager's session entry points (runInSession, listSessions, deleteSession) call a sandbox's
// SessionRegistry.
//
// A session is one long-running exec in the guest, `python3 -u -c BOOTSTRAP`, whose stdin first
// carries guest/session/session-server.py (the bootstrap reads exactly that many bytes and runs
// it), then requests; responses come back on its stdout. The framing and the server's two
// processes (a pump that outlives the interpreter, so no output is lost when it dies) are in
// docs/protocol.md, "Sessions". Cells of one session run one at a time, in order.
//
// Timeout: SIGINT to the session's process group (KeyboardInterrupt in the cell; a subprocess in
// the foreground dies of it; the pump ignores it); the answer then has timed_out: true and the
// session keeps its state. If no answer comes within INTERRUPT_GRACE_MS the host asks the pump to
// kill the interpreter (K): the answer says session_reset: true, with the output up to the kill,
// and the next use of the name starts a new interpreter. A pump that does not answer that either
// is SIGKILLed with its whole group. Aborting a streamed cell (its client went away) does the same
// at once.
//
// Rich outputs (display(), matplotlib figures, the final expression's value) come as B frames:
// MIME bundles in Jupyter's convention, in `results` (or to a streamed cell's listener).
import { readFileSync } from 'node:fs';
import type { AgentClient, ExecCallbacks, ExecHandle, ExitInfo } from '../agent/client.ts';
import { EmberdError } from '../errors.ts';
import { settlesWithin } from '../settles-within.ts';

export interface SessionRunOptions {
  /** Interrupt the cell after this long (required, > 0). */
  timeoutMs: number;
  /** stdout + stderr + bundle + value bytes kept; beyond it output is dropped (a bundle whole) and
   * `truncated` is set. 0: no cap. */
  outputCap: number;
  /** Bytes for the cell's stdin (else it reads /dev/null). */
  stdin?: Buffer;
  /** A streamed cell: output and results go here as they come, and are not kept in the result. */
  listener?: SessionListener;
  /** Aborted: a cell still queued never runs; a running one is interrupted as by its timeout. */
  signal?: AbortSignal;
}

export interface SessionListener {
  /** The cell was sent to the interpreter (it waited for the cells before it). */
  started?(): void;
  stdout?(data: Buffer): void;
  stderr?(data: Buffer): void;
  result?(bundle: ResultBundle): void;
}

/**
 * A rich output in Jupyter's convention: MIME type -> data (base64 for binary types such as
 * image/png, a JSON value for JSON types, text otherwise; text/plain always), and whether it is
 * the final expression's value.
 */
export type ResultBundle = { is_main_result: boolean } & Record<string, unknown>;

export interface SessionResult {
  stdout: Buffer;
  stderr: Buffer;
  /** 0; 1 after an uncaught exception (traceback on stderr); SystemExit's status; 130 after an
   * interrupt (KeyboardInterrupt); the exit status of the interpreter when the session ended. */
  exitCode: number;
  durationUs: number;
  timedOut: boolean;
  truncated: boolean;
  /** repr() of the cell's final expression, null when it ends with a statement (or is None). */
  value: string | null;
  /** MIME bundles in the order the cell made them (display(), figures, the main result). */
  results: ResultBundle[];
  /** The interpreter is gone (killed after a timeout, or it exited): its state is lost. */
  sessionReset: boolean;
}

export interface SessionInfo {
  name: string;
  createdAt: Date;
  lastUsedAt: Date;
  /** Cells run so far. */
  execs: number;
}

/** Something of a sandbox that lives on an exec channel, taken back when a saved guest resumes. */
export interface ChannelOwner {
  channel: number;
  callbacks(): ExecCallbacks;
  attach(handle: ExecHandle): void;
  /** Its channel did not come back with the guest. */
  lost(err: Error): void;
}

export const SESSION_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
export const MAX_SESSIONS = 16;
/** The pack whose interpreter can host sessions, and the packs built on it (python-data). */
export const SESSION_PACK = 'python';
const SESSION_PACKS = /^python(-|$)/;
const START_TIMEOUT_MS = 60_000;
export const INTERRUPT_GRACE_MS = 1000;
/** After K (or a delete), how long the pump has to report the interpreter's end before SIGKILL. */
const KILL_GRACE_MS = 2000;
const HEADER = 8;
const MAX_FRAME = 64 << 20;

const SERVER_SOURCE = readFileSync(new URL('../../guest/session/session-server.py', import.meta.url));
const BOOTSTRAP = [
  'import os',
  'b=bytearray()',
  `while len(b)<${SERVER_SOURCE.length}:b+=os.read(0,${SERVER_SOURCE.length}-len(b)) or os._exit(1)`,
  "exec(compile(bytes(b),'<emberd-session>','exec'))",
].join('\n');

function frame(type: string, payload: Buffer): Buffer {
  const h = Buffer.alloc(HEADER);
  h.write('ES', 0, 'latin1');
  h.write(type, 2, 'latin1');
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

interface Cell {
  id: number;
  startedAt: number;
  cap: number;
  stdout: Buffer[];
  stderr: Buffer[];
  results: ResultBundle[];
  listener: SessionListener | undefined;
  kept: number;
  truncated: boolean;
  interrupted: boolean;
  timers: NodeJS.Timeout[];
  unlisten?: () => void;
  resolve: (r: SessionResult) => void;
  reject: (e: Error) => void;
}

interface DoneFrame { id: number; exit_code: number; value: string | null; interrupted: boolean; truncated: boolean; duration_us: number }
/** The interpreter ended; every byte it wrote came before this. */
interface EndFrame { exit_code: number; signal: number; duration_us: number }

const MIME_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/i;

/** A B frame's bundle; undefined for anything that is not a JSON object (then it is dropped). */
function parseBundle(payload: Buffer): ResultBundle | undefined {
  let b: unknown;
  try {
    b = JSON.parse(payload.toString());
  } catch {
    return undefined;
  }
  if (typeof b !== 'object' || b === null || Array.isArray(b)) return undefined;
  const bundle: ResultBundle = { is_main_result: (b as Record<string, unknown>).is_main_result === true };
  // Only MIME types ("type/subtype") besides the flag: the cell writes the bundle, and a key such as
  // "type" would otherwise pose as another event of a streamed answer.
  for (const [k, v] of Object.entries(b)) if (MIME_TYPE.test(k)) bundle[k] = v;
  return bundle;
}

/** An idle session as a paused sandbox keeps it; its channel's flow control is in the agent's saved state. */
export interface SavedSession {
  name: string;
  created_at: string;
  last_used_at: string;
  execs: number;
  next_id: number;
  channel: number;
}

/** Thrown by a session that ended before a queued cell could run: the registry retries on a new one. */
class SessionGone extends Error {}

class Session {
  readonly name: string;
  readonly createdAt: Date = new Date();
  lastUsedAt = new Date();
  execs = 0;
  exit: ExitInfo | undefined;
  readonly ready: Promise<void>;
  private handle!: ExecHandle;
  private readonly onGone: (s: Session) => void;
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private stderrTail = '';
  private cell: Cell | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = 0;
  /** Cells asked for and not answered yet (running or queued). */
  private running = 0;
  private failure: Error | undefined;
  /** X came: the interpreter is gone, the pump is ending. */
  private interpreterEnded = false;
  /** The fallback SIGKILL once K was sent. */
  private killing: NodeJS.Timeout | undefined;
  private resolveReady!: () => void;
  private rejectReady!: (e: Error) => void;

  /** Starts a new interpreter on `agent`, or (`saved`) takes back an idle one of a resumed sandbox (attach). */
  constructor(name: string, start: { agent: AgentClient; env: Record<string, string> } | { saved: SavedSession }, onGone: (s: Session) => void) {
    this.name = name;
    this.onGone = onGone;
    this.ready = new Promise((res, rej) => { this.resolveReady = res; this.rejectReady = rej; });
    this.ready.catch(() => {});
    if ('saved' in start) {
      this.createdAt = new Date(start.saved.created_at);
      this.lastUsedAt = new Date(start.saved.last_used_at);
      this.execs = start.saved.execs;
      this.nextId = start.saved.next_id;
      return;
    }
    this.attach(start.agent.exec(
      { argv: ['python3', '-u', '-c', BOOTSTRAP], stdin: SERVER_SOURCE, stdinOpen: true, cwd: '/root', env: start.env },
      this.callbacks(),
    ));
    const timer = setTimeout(() => this.kill(new EmberdError('SESSION_START_FAILED', `session "${name}": the interpreter did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    void this.ready.then(() => clearTimeout(timer), () => clearTimeout(timer));
  }

  callbacks(): ExecCallbacks {
    return { onStdout: (b) => this.onData(b), onStderr: (b) => { this.stderrTail = (this.stderrTail + b.toString()).slice(-4096); } };
  }

  /**
   * Binds the session to its exec: the one it started, or its channel adopted on a resumed guest
   * (then it is ready). `reseed` (a fork): S goes first, so the interpreter reseeds `random`
   * before any cell; a server too old to know S ignores it.
   */
  attach(handle: ExecHandle, resumed = false, reseed = false): void {
    this.handle = handle;
    handle.exited.then((e) => this.ended(e, undefined), (err: Error) => this.ended(undefined, err));
    if (reseed) handle.writeStdin(frame('S', Buffer.alloc(0))).catch(() => {});
    if (resumed) this.resolveReady();
  }

  /** A saved session whose channel did not come back: it is gone. */
  lost(err: Error): void {
    this.ended(undefined, err);
  }

  /** Nothing in flight or queued, and its interpreter is up: a pause can save it as it is. */
  get idle(): boolean {
    return this.alive && !this.cell && this.running === 0 && !this.handle.stdinPending && this.pendingLen === 0;
  }

  get channel(): number {
    return this.handle.channel;
  }

  save(): SavedSession {
    return { name: this.name, created_at: this.createdAt.toISOString(), last_used_at: this.lastUsedAt.toISOString(), execs: this.execs, next_id: this.nextId, channel: this.handle.channel };
  }

  get alive(): boolean {
    return this.exit === undefined && this.failure === undefined && !this.interpreterEnded;
  }

  run(code: string, opts: SessionRunOptions): Promise<SessionResult> {
    this.running++;
    const p = this.queue.then(() => this.runNow(code, opts)).finally(() => { this.running--; });
    this.queue = p.catch(() => {});
    return p;
  }

  /**
   * Ends the interpreter and everything it started: the pump kills it and reports (a running
   * cell answers session_reset with its output), then ends its process group; SIGKILL to the
   * group if that does not happen in time.
   */
  async close(): Promise<void> {
    if (this.exit) return;
    this.killInterpreter();
    if (!(await settlesWithin(this.handle.exited, KILL_GRACE_MS))) this.handle.signal(9);
    await settlesWithin(this.handle.exited, 5000);
  }

  /** K: the pump SIGKILLs the interpreter and answers X; if it does not, the group is SIGKILLed. */
  private killInterpreter(): void {
    if (this.killing) return;
    this.killing = setTimeout(() => this.handle.signal(9), KILL_GRACE_MS);
    this.handle.writeStdin(frame('K', Buffer.alloc(0))).catch(() => {});
  }

  private async runNow(code: string, opts: SessionRunOptions): Promise<SessionResult> {
    await this.ready;
    if (opts.signal?.aborted) throw new EmberdError('INTERNAL', 'the cell was abandoned before it ran (its client went away)');
    if (!this.alive) throw new SessionGone();
    this.execs++;
    this.lastUsedAt = new Date();
    const id = ++this.nextId;
    return new Promise<SessionResult>((resolve, reject) => {
      const cell: Cell = {
        id, startedAt: performance.now(), cap: opts.outputCap, stdout: [], stderr: [], results: [], listener: opts.listener,
        kept: 0, truncated: false, interrupted: false, timers: [], resolve, reject,
      };
      this.cell = cell;
      const req = { id, code, cap: opts.outputCap, stdin: opts.stdin?.length ? opts.stdin.toString('base64') : null };
      this.handle.writeStdin(frame('C', Buffer.from(JSON.stringify(req)))).catch(() => {});
      cell.listener?.started?.();
      cell.timers.push(setTimeout(() => this.interrupt(cell), opts.timeoutMs));
      const onAbort = () => this.interrupt(cell);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      cell.unlisten = () => opts.signal?.removeEventListener('abort', onAbort);
    });
  }

  /** SIGINT (KeyboardInterrupt in the cell); K if it has not answered a grace second later. */
  private interrupt(cell: Cell): void {
    if (cell.interrupted || this.cell !== cell) return;
    cell.interrupted = true;
    this.handle.signal(2);
    cell.timers.push(setTimeout(() => this.killInterpreter(), INTERRUPT_GRACE_MS));
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return; // being killed: nothing it says counts any more
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    while (this.pendingLen >= HEADER) {
      const buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
      this.pending = [buf];
      const len = buf.readUInt32BE(4);
      if (buf[0] !== 0x45 || buf[1] !== 0x53 || len > MAX_FRAME) {
        this.kill(new EmberdError('INTERNAL', `session "${this.name}": unexpected bytes from the session server; the session was reset`));
        return;
      }
      if (buf.length < HEADER + len) return;
      const type = String.fromCharCode(buf[2]!);
      const payload = buf.subarray(HEADER, HEADER + len);
      const rest = buf.subarray(HEADER + len);
      this.pending = rest.length ? [rest] : [];
      this.pendingLen = rest.length;
      this.onFrame(type, payload);
    }
  }

  private onFrame(type: string, payload: Buffer): void {
    const cell = this.cell;
    switch (type) {
      case 'R':
        this.resolveReady();
        break;
      case 'O':
      case 'E': {
        if (!cell) break;
        let data = payload;
        if (cell.cap && cell.kept + data.length > cell.cap) { // the server caps too; never trust it blindly
          data = data.subarray(0, Math.max(0, cell.cap - cell.kept));
          cell.truncated = true;
        }
        cell.kept += data.length;
        if (!data.length) break;
        if (type === 'O') {
          if (cell.listener) cell.listener.stdout?.(data);
          else cell.stdout.push(data);
        } else if (cell.listener) cell.listener.stderr?.(data);
        else cell.stderr.push(data);
        break;
      }
      case 'B': { // a MIME bundle: whole or not at all, under the same cap
        if (!cell) break;
        if (cell.cap && cell.kept + payload.length > cell.cap) {
          cell.truncated = true;
          break;
        }
        const bundle = parseBundle(payload);
        if (!bundle) break;
        cell.kept += payload.length;
        if (cell.listener) cell.listener.result?.(bundle);
        else cell.results.push(bundle);
        break;
      }
      case 'D': {
        if (!cell) break;
        const d = JSON.parse(payload.toString()) as DoneFrame;
        if (d.id !== cell.id) break;
        this.finishCell(cell, {
          stdout: Buffer.concat(cell.stdout),
          stderr: Buffer.concat(cell.stderr),
          exitCode: d.exit_code,
          durationUs: d.duration_us,
          timedOut: cell.interrupted && d.interrupted,
          truncated: cell.truncated || d.truncated,
          value: d.value,
          results: cell.results,
          sessionReset: false,
        });
        break;
      }
      case 'X': { // the interpreter is gone; the pump ends its group next
        const x = JSON.parse(payload.toString()) as EndFrame;
        this.interpreterEnded = true;
        this.onGone(this);
        if (cell) this.finishCell(cell, this.resetResult(cell, x.exit_code, x.duration_us));
        break;
      }
      default:
        break;
    }
  }

  /** The answer of a cell whose interpreter ended: what it wrote, and the status it ended with. */
  private resetResult(cell: Cell, exitCode: number, durationUs: number): SessionResult {
    return {
      stdout: Buffer.concat(cell.stdout),
      stderr: Buffer.concat(cell.stderr),
      exitCode,
      durationUs,
      timedOut: cell.interrupted,
      truncated: cell.truncated,
      value: null,
      results: cell.results,
      sessionReset: true,
    };
  }

  private finishCell(cell: Cell, r: SessionResult | Error): void {
    for (const t of cell.timers) clearTimeout(t);
    cell.unlisten?.();
    if (this.cell === cell) this.cell = undefined;
    if (r instanceof Error) cell.reject(r);
    else cell.resolve(r);
  }

  private kill(reason: Error): void {
    this.failure ??= reason;
    this.handle.signal(9);
  }

  private ended(exit: ExitInfo | undefined, err: Error | undefined): void {
    this.exit = exit ?? { exitCode: -1, signal: 0, timedOut: false, truncated: false, durationUs: 0, fastPath: false };
    clearTimeout(this.killing);
    this.onGone(this);
    const why = this.stderrTail.trim();
    this.rejectReady(this.failure ?? err ?? new EmberdError('SESSION_START_FAILED',
      `session "${this.name}": the interpreter exited before it was ready (status ${exit?.exitCode})${why ? `: ${why}` : ''}`));
    this.failure ??= err;
    const cell = this.cell;
    if (!cell) return;
    if (err) { // the agent connection is gone, and with it the sandbox
      this.finishCell(cell, err);
      return;
    }
    // The pump itself died (it reports the interpreter's end otherwise): what was in flight is lost.
    this.finishCell(cell, this.resetResult(cell, exit!.exitCode, Math.round((performance.now() - cell.startedAt) * 1000)));
  }
}

export class SessionRegistry {
  private readonly sessions = new Map<string, Session>();
  private readonly pack: string;
  private readonly agentOf: () => AgentClient | undefined;
  private readonly env: Record<string, string>;
  private closed = false;

  /** `agentOf` gives the sandbox's agent client once it is ready; `env` is the sandbox's. */
  constructor(pack: string, agentOf: () => AgentClient | undefined, env: Record<string, string> = {}) {
    this.pack = pack;
    this.agentOf = agentOf;
    this.env = env;
  }

  get supported(): boolean {
    return SESSION_PACKS.test(this.pack);
  }

  /** Runs `code` in session `name`, created on first use. */
  async run(name: string, code: string, opts: SessionRunOptions): Promise<SessionResult> {
    this.check(name);
    if (!(opts.timeoutMs > 0)) throw new EmberdError('INVALID_REQUEST', 'a session cell needs a positive timeout');
    for (let attempt = 0; ; attempt++) {
      const s = this.sessions.get(name) ?? this.create(name);
      try {
        return await s.run(code, opts);
      } catch (e) {
        if (e instanceof SessionGone && attempt === 0) continue; // it ended while this cell waited: a new one
        if (e instanceof SessionGone) throw new EmberdError('SESSION_START_FAILED', `session "${name}" ended before it could run the code; retry`);
        throw e;
      }
    }
  }

  list(): SessionInfo[] {
    this.checkSupported();
    return [...this.sessions.values()].map((s) => ({ name: s.name, createdAt: s.createdAt, lastUsedAt: s.lastUsedAt, execs: s.execs }));
  }

  /** Ends session `name` (a cell it is running answers with session_reset). */
  async delete(name: string): Promise<void> {
    this.check(name);
    const s = this.sessions.get(name);
    if (!s) throw new EmberdError('SESSION_NOT_FOUND', `there is no session "${name}" in this sandbox; list them with GET /sandboxes/{id}/sessions`);
    this.sessions.delete(name);
    await s.close();
  }

  /** Sessions with a cell running or queued (a pause waits for none, or ends them when forced). */
  busy(): string[] {
    return [...this.sessions.values()].filter((s) => !s.idle).map((s) => s.name);
  }

  /** Every live session, for a paused sandbox's record (call when none is busy). */
  save(): SavedSession[] {
    return [...this.sessions.values()].filter((s) => s.alive).map((s) => s.save());
  }

  /**
   * The saved sessions of a resumed guest replace whatever this registry held; each is bound to
   * its channel when the agent adopts it (ChannelOwner.attach). `reseed`: the guest is a fork, whose
   * interpreters hold the parent's `random` state.
   */
  revive(saved: SavedSession[], o: { reseed?: boolean } = {}): ChannelOwner[] {
    this.sessions.clear();
    this.closed = false;
    return saved.map((r) => {
      const s = new Session(r.name, { saved: r }, (gone) => { if (this.sessions.get(r.name) === gone) this.sessions.delete(r.name); });
      this.sessions.set(r.name, s);
      return { channel: r.channel, callbacks: () => s.callbacks(), attach: (h: ExecHandle) => s.attach(h, true, o.reseed), lost: (e: Error) => s.lost(e) };
    });
  }

  /** Ends every session; no new ones start. Used when the sandbox goes away. */
  async closeAll(): Promise<void> {
    this.closed = true;
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.allSettled(all.map((s) => s.close()));
  }

  private checkSupported(): void {
    if (!this.supported) {
      throw new EmberdError('SESSIONS_UNSUPPORTED', `sessions need a persistent interpreter; the "${this.pack}" language pack has none (create the sandbox with language_pack "${SESSION_PACK}" or "python-data")`);
    }
  }

  private check(name: string): void {
    this.checkSupported();
    if (!SESSION_NAME.test(name)) {
      throw new EmberdError('INVALID_REQUEST', `invalid session name "${name}": use 1 to 64 letters, digits, "_", "." or "-"`);
    }
  }

  private create(name: string): Session {
    const agent = this.agentOf();
    if (this.closed || !agent || agent.isClosed) throw new EmberdError('SANDBOX_NOT_READY', 'the sandbox is not running; sessions need a ready sandbox');
    if (this.sessions.size >= MAX_SESSIONS) {
      throw new EmberdError('TOO_MANY_SESSIONS', `this sandbox already has ${this.sessions.size} sessions (the limit is ${MAX_SESSIONS}); delete some with DELETE /sandboxes/{id}/sessions/{name}`);
    }
    const s = new Session(name, { agent, env: this.env }, (gone) => { if (this.sessions.get(name) === gone) this.sessions.delete(name); });
    this.sessions.set(name, s);
    return s;
  }
}
