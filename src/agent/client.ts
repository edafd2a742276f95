// Host side of the guest protocol: one AgentClient per VM control stream, multiplexing any number
// of exec channels. Every wait has a deadline; a vanished stream fails every pending call. The
// guest is not trusted: output beyond the credit it was given, or a guest that stops reading what
// the host sends, ends the connection (AGENT_PROTOCOL) rather than growing the daemon's memory.
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import {
  FrameDecoder, INITIAL_WINDOW, MAX_PAYLOAD, MsgType, PROTOCOL_VERSION, decodeTlv, encodeFrame, encodeMessage,
  fieldsToObject, type Frame,
} from './codec.ts';
import { EmberdError } from '../errors.ts';
import { PortConnection } from './port-channel.ts';

export interface HelloAck {
  protoVersion: number;
  agentVersion: string;
  capabilities: string[];
  transport: string;
  uptimeMs: number;
  /** The guest's writable layer (the tmpfs upper of its root) in bytes; absent without one. */
  diskBytes?: number;
  /** pids.max of the cgroup every exec runs in (0: no limit); absent without that cgroup. */
  pidsMax?: number;
  /** memory.max of that cgroup in bytes (0: no limit); absent without it. */
  memoryMax?: number;
}

/** What a HELLO carries besides the protocol version (docs/protocol.md, "HELLO"). */
export interface HelloExtra {
  realtimeNs?: bigint;
  entropy?: Buffer;
  hostname?: string;
  /** Size of the sandbox's writable layer: writes past it fail with ENOSPC in the guest. */
  diskBytes?: number;
  /** The most processes + threads the sandbox's execs may have together; 0: the guest's ceiling. */
  pidsMax?: number;
}

export interface ExecRequest {
  argv?: string[];
  code?: string;
  env?: Record<string, string>;
  cwd?: string;
  stdin?: Buffer;
  /** Keep stdin open for writeStdin(); closeStdin() ends it. */
  stdinOpen?: boolean;
  timeoutMs?: number;
  outputCap?: number;
  /** Python `code`: always start a fresh interpreter, never the guest's forkserver (fast path). */
  freshProcess?: boolean;
  /**
   * Run on a pseudo-terminal of this size (docs/protocol.md, "PTY"): stdin, stdout and stderr are
   * its slave, output comes as stdout only, resize() changes the size. Never the fast path.
   */
  tty?: { rows: number; cols: number };
}

export interface ExitInfo {
  exitCode: number;
  signal: number;
  timedOut: boolean;
  truncated: boolean;
  durationUs: number;
  /** The guest's forkserver ran it (docs/protocol.md, "Fast path"). */
  fastPath: boolean;
}

export interface ExecResult extends ExitInfo {
  stdout: Buffer;
  stderr: Buffer;
}

export interface ExecCallbacks {
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /**
   * When true, output credit is not handed back automatically: call ExecHandle.grant(n) once the
   * n bytes are really consumed (e.g. written to a slow HTTP client). The guest then stops
   * reading the process's pipes, so a fast producer waits instead of filling host memory.
   */
  manualCredit?: boolean;
}

/**
 * One open channel's flow-control state, as a paused sandbox keeps it (docs/snapshots.md,
 * "Pause"): what the guest may still send, what the host may still write, whether stdin was closed.
 */
export interface ChannelState {
  channel: number;
  outputCredit: number;
  stdinCredit: number;
  stdinClosed: boolean;
}

/** What an AgentClient must know to go on with a saved guest: its channels and the frames it held back. */
export interface AgentState {
  nextChannel: number;
  channels: ChannelState[];
  /** Frames queued while suspended (credit grants, signals), sent to the resumed guest first. */
  held: Buffer[];
}

/** How long past the guest-side timeout the host waits for EXIT before giving up on the guest. */
const EXIT_GRACE_MS = 5000;

/**
 * Bytes the host may have queued for a guest that does not read them (frames are small: EXEC with
 * its inline stdin, WINDOW, SIGNAL; bulk stdin waits for credit): past this the guest is stuck or
 * hostile, and the connection is ended.
 */
export const MAX_UNREAD_BYTES = 16 << 20;

export class ExecHandle {
  readonly channel: number;
  readonly exited: Promise<ExitInfo>;
  private readonly client: AgentClient;
  private readonly callbacks: ExecCallbacks;
  private resolveExit!: (e: ExitInfo) => void;
  private rejectExit!: (e: Error) => void;
  private stdinCredit = INITIAL_WINDOW;
  /** Output credit the guest holds on this channel: what it may still send. */
  private outputCredit = INITIAL_WINDOW;
  private stdinQueue: { data: Buffer; done: () => void }[] = [];
  private stdinClosed = false;
  private timer: NodeJS.Timeout | undefined;
  settled = false;

  constructor(client: AgentClient, channel: number, callbacks: ExecCallbacks, hostDeadlineMs: number | undefined, resumed?: ChannelState) {
    this.client = client;
    this.channel = channel;
    this.callbacks = callbacks;
    if (resumed) {
      this.outputCredit = resumed.outputCredit;
      this.stdinCredit = resumed.stdinCredit;
      this.stdinClosed = resumed.stdinClosed;
    }
    this.exited = new Promise<ExitInfo>((res, rej) => { this.resolveExit = res; this.rejectExit = rej; });
    this.exited.catch(() => {}); // callers may only care about callbacks; never an unhandled rejection
    if (hostDeadlineMs !== undefined) {
      this.timer = setTimeout(() => {
        this.signal(9);
        this.fail(new EmberdError('AGENT_TIMEOUT', `the guest did not report the end of exec channel ${channel} within ${hostDeadlineMs} ms; the sandbox may be overloaded or hung`));
      }, hostDeadlineMs);
    }
  }

  /** Its flow-control state (for a pause: stdin still queued here is not part of it, see busy). */
  state(): ChannelState {
    return { channel: this.channel, outputCredit: this.outputCredit, stdinCredit: this.stdinCredit, stdinClosed: this.stdinClosed };
  }

  /** Stdin is queued on the host, waiting for the guest's credit. */
  get stdinPending(): boolean {
    return this.stdinQueue.length > 0;
  }

  /** Hands `bytes` of output credit back to the guest (see ExecCallbacks.manualCredit). */
  grant(bytes: number): void {
    if (bytes <= 0 || this.settled) return;
    this.outputCredit += bytes;
    this.client.send(encodeMessage('WINDOW', this.channel, { increment: bytes }));
  }

  /** A tty exec's new window size (RESIZE); the guest's kernel sends SIGWINCH. */
  resize(rows: number, cols: number): void {
    if (!this.settled) this.client.send(encodeMessage('RESIZE', this.channel, { rows, cols }));
  }

  signal(signo: number): void {
    if (!this.settled) this.client.send(encodeMessage('SIGNAL', this.channel, { signo }));
  }

  /** Queues stdin bytes; resolves once they were handed to the stream (within the guest's credit). */
  writeStdin(data: Buffer): Promise<void> {
    if (this.stdinClosed) return Promise.reject(new Error('stdin is closed'));
    return new Promise((done) => { this.stdinQueue.push({ data, done }); this.pumpStdin(); });
  }

  closeStdin(): void {
    if (this.stdinClosed) return;
    this.stdinClosed = true;
    this.stdinQueue.push({ data: Buffer.alloc(0), done: () => {} });
    this.pumpStdin();
  }

  /** @internal */
  handle(frame: Frame): void {
    switch (frame.type) {
      case MsgType.STDOUT:
      case MsgType.STDERR:
        this.outputCredit -= frame.payload.length;
        if (this.outputCredit < 0) {
          this.client.violation(`the guest sent ${-this.outputCredit} bytes of output on channel ${this.channel} beyond the credit it was given`);
          return;
        }
        if (frame.type === MsgType.STDOUT) this.callbacks.onStdout?.(frame.payload);
        else this.callbacks.onStderr?.(frame.payload);
        // Consumed synchronously unless the caller manages credit itself.
        if (!this.callbacks.manualCredit) this.grant(frame.payload.length);
        break;
      case MsgType.WINDOW: {
        const f = fieldsToObject(frame.type, decodeTlv(frame.type, frame.payload));
        this.stdinCredit += Number(f.increment);
        this.pumpStdin();
        break;
      }
      case MsgType.EXIT: {
        const f = fieldsToObject(frame.type, decodeTlv(frame.type, frame.payload));
        this.finish({
          exitCode: Number(f.exit_code),
          signal: Number(f.signal ?? 0),
          timedOut: Number(f.timed_out ?? 0) === 1,
          truncated: Number(f.truncated ?? 0) === 1,
          durationUs: Number(f.duration_us ?? 0n),
          fastPath: Number(f.fast_path ?? 0) === 1,
        });
        break;
      }
      default:
        break;
    }
  }

  private pumpStdin(): void {
    while (this.stdinQueue.length > 0 && !this.settled) {
      const head = this.stdinQueue[0]!;
      if (head.data.length === 0) { // EOF marker
        this.client.send(encodeFrame(MsgType.STDIN, this.channel));
        this.stdinQueue.shift();
        head.done();
        continue;
      }
      const n = Math.min(head.data.length, this.stdinCredit, 65536);
      if (n <= 0) return;
      this.client.send(encodeFrame(MsgType.STDIN, this.channel, head.data.subarray(0, n)));
      this.stdinCredit -= n;
      head.data = head.data.subarray(n);
      if (head.data.length === 0) { this.stdinQueue.shift(); head.done(); }
    }
  }

  private finish(info: ExitInfo): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.client.release(this.channel);
    this.resolveExit(info);
  }

  /** @internal See AgentClient.abandon: never settles, holds no timer. */
  abandon(): void {
    this.settled = true;
    clearTimeout(this.timer);
    this.stdinQueue = [];
  }

  /** @internal */
  fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.client.release(this.channel);
    for (const q of this.stdinQueue) q.done();
    this.stdinQueue = [];
    this.rejectExit(err);
  }
}

export interface AgentClientOptions {
  /** Called with connection-level ERROR frames and local decode problems. */
  onProtocolError?: (code: string, message: string) => void;
}

export class AgentClient {
  private readonly stream: Duplex;
  private readonly decoder: FrameDecoder;
  private readonly execs = new Map<number, ExecHandle>();
  /** Proxied TCP connections (port-channel.ts): channels of their own, never saved with a pause. */
  private readonly ports = new Map<number, PortConnection>();
  private readonly waiters = new Set<{ type: number; match: (f: Frame) => boolean; resolve: (f: Frame) => void; reject: (e: Error) => void }>();
  private readonly opts: AgentClientOptions;
  private nextChannel = 1;
  private closedError: EmberdError | undefined;
  private onClosed: () => void = () => {};
  private handshaken = false;
  /** suspend(): frames are held back, and the stream's end does not fail the channels. */
  private suspended = false;
  private held: Buffer[] = [];
  /** Bytes read from the stream so far (drain() watches it). */
  private received = 0;
  /** What the guest said it can do in its last HELLO_ACK (e.g. `pty`); empty before one. */
  capabilities: readonly string[] = [];
  /** Resolves when the stream has ended, for whatever reason. */
  readonly closed: Promise<void>;

  constructor(stream: Duplex, opts: AgentClientOptions = {}) {
    this.stream = stream;
    this.opts = opts;
    // Before the first HELLO_ACK a byte stream may carry noise (a port opened early); after it, a
    // bad frame means a broken or hostile guest.
    this.decoder = new FrameDecoder((code, message) => {
      if (this.handshaken) this.violation(`the guest sent a bad frame (${code}: ${message})`);
      else opts.onProtocolError?.(code, message);
    });
    let onClosed!: () => void;
    this.closed = new Promise((r) => { onClosed = r; });
    stream.on('data', (chunk: Buffer) => { this.received += chunk.length; for (const f of this.decoder.push(chunk)) this.dispatch(f); });
    // A connector may hand over a paused stream (connectHybridVsock stops reading after its OK
    // line so no byte is lost): reading starts now that someone listens.
    stream.resume();
    this.onClosed = onClosed;
    const end = (err?: Error) => this.suspended ? this.onClosed() : this.end(new EmberdError('AGENT_DISCONNECTED', `the control channel to the guest closed${err ? `: ${err.message}` : ''}; the VM has probably stopped`));
    stream.on('error', end);
    stream.on('close', () => end());
    stream.on('end', () => end());
  }

  get isClosed(): boolean {
    return this.closedError !== undefined;
  }

  /** Why the connection ended (AGENT_DISCONNECTED, AGENT_PROTOCOL), once it has. */
  get closeReason(): EmberdError | undefined {
    return this.closedError;
  }

  private end(reason: EmberdError): void {
    if (this.closedError) return;
    this.closedError = reason;
    for (const e of this.execs.values()) e.fail(reason);
    for (const p of [...this.ports.values()]) p.fail(reason);
    for (const w of this.waiters) w.reject(reason);
    this.waiters.clear();
    this.onClosed();
  }

  /**
   * The handshake. A HELLO asking for limits (diskBytes, pidsMax) resolves only once the guest
   * reports them in effect: one it could not apply rejects (INVALID_REQUEST: the value cannot be
   * had, e.g. below what the disk already holds or above the guest's pids ceiling; BOOT_FAILED:
   * the guest cannot enforce it), and an agent that does not know them is AGENT_VERSION_MISMATCH.
   * The rest of the HELLO (clock, entropy, hostname) applies either way.
   */
  async hello(timeoutMs: number, extra: HelloExtra = {}): Promise<HelloAck> {
    const reply = this.waitFor(MsgType.HELLO_ACK, () => true, timeoutMs, 'HELLO_ACK');
    this.send(encodeMessage('HELLO', 0, {
      proto_version: PROTOCOL_VERSION,
      realtime_ns: extra.realtimeNs ?? BigInt(Date.now()) * 1_000_000n,
      entropy: extra.entropy ?? randomBytes(64),
      hostname: extra.hostname,
      disk_bytes: extra.diskBytes === undefined ? undefined : BigInt(extra.diskBytes),
      pids_max: extra.pidsMax,
    }));
    const f = fieldsToObject(MsgType.HELLO_ACK, decodeTlv(MsgType.HELLO_ACK, (await reply).payload));
    this.handshaken = true;
    const ack: HelloAck = {
      protoVersion: Number(f.proto_version),
      agentVersion: String(f.agent_version ?? ''),
      capabilities: ((f.capability as Buffer[] | undefined) ?? []).map(String),
      transport: String(f.transport ?? ''),
      uptimeMs: Number(f.uptime_ms ?? 0n),
      ...(f.disk_bytes !== undefined && { diskBytes: Number(f.disk_bytes) }),
      ...(f.pids_max !== undefined && { pidsMax: Number(f.pids_max) }),
      ...(f.memory_max !== undefined && { memoryMax: Number(f.memory_max) }),
    };
    this.capabilities = ack.capabilities;
    if (ack.protoVersion !== PROTOCOL_VERSION) {
      throw new EmberdError('AGENT_VERSION_MISMATCH', `the guest agent speaks protocol ${ack.protoVersion}, this daemon speaks ${PROTOCOL_VERSION}; rebuild the images with \`emberd images build --force\``);
    }
    if (f.limits_error !== undefined) {
      const code = String(f.limits_error);
      throw new EmberdError(code === 'LIMIT_INVALID' ? 'INVALID_REQUEST' : 'BOOT_FAILED', `the guest did not apply the sandbox's limits (${code}): ${String(f.limits_message ?? '')}`);
    }
    const unknown = [extra.diskBytes !== undefined && ack.diskBytes === undefined && 'disk_bytes', extra.pidsMax !== undefined && ack.pidsMax === undefined && 'pids_max'].filter(Boolean);
    if (unknown.length > 0) {
      throw new EmberdError('AGENT_VERSION_MISMATCH', `the guest agent ${ack.agentVersion} does not enforce ${unknown.join(' and ')}; rebuild the images with \`emberd images build --force\``);
    }
    return ack;
  }

  /**
   * HELLO, repeated until HELLO_ACK or `deadline` (epoch ms): while a guest boots, a HELLO can sit
   * in a buffer nobody reads yet, and a repeated HELLO is harmless. `keepTrying` can end it early.
   */
  async helloUntil(deadline: number, extra: HelloExtra = {}, keepTrying: () => boolean = () => true): Promise<HelloAck> {
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || !keepTrying()) throw new EmberdError('BOOT_TIMEOUT', 'no handshake from the guest agent before the deadline');
      try {
        return await this.hello(Math.min(left, 3000), extra);
      } catch (e) {
        if (!(e instanceof EmberdError && e.code === 'AGENT_TIMEOUT')) throw e;
      }
    }
  }

  /** Round trip of a PING, in microseconds. */
  async ping(timeoutMs: number, payload: Buffer = randomBytes(8)): Promise<number> {
    const start = process.hrtime.bigint();
    const reply = this.waitFor(MsgType.PONG, (f) => f.payload.equals(payload), timeoutMs, 'PONG');
    this.send(encodeFrame(MsgType.PING, 0, payload));
    await reply;
    return Number(process.hrtime.bigint() - start) / 1000;
  }

  exec(req: ExecRequest, callbacks: ExecCallbacks = {}): ExecHandle {
    if (this.closedError) throw this.closedError;
    if ((req.argv === undefined) === (req.code === undefined)) throw new Error('exec needs exactly one of argv and code');
    const channel = this.allocChannel();
    const deadline = req.timeoutMs ? req.timeoutMs + EXIT_GRACE_MS : undefined;
    const handle = new ExecHandle(this, channel, callbacks, deadline);
    this.execs.set(channel, handle);
    const payloadStdin = req.stdin && req.stdin.length > MAX_PAYLOAD / 2 ? undefined : req.stdin;
    this.send(encodeMessage('EXEC', channel, {
      argv: req.argv,
      code: req.code,
      env: req.env ? Object.entries(req.env).map(([k, v]) => `${k}=${v}`) : undefined,
      cwd: req.cwd,
      stdin: payloadStdin,
      stdin_open: req.stdinOpen || (req.stdin !== undefined && payloadStdin === undefined) ? 1 : undefined,
      timeout_ms: req.timeoutMs ? BigInt(req.timeoutMs) : undefined,
      output_cap: req.outputCap ? BigInt(req.outputCap) : undefined,
      fresh_process: req.freshProcess ? 1 : undefined,
      tty: req.tty ? 1 : undefined,
      rows: req.tty?.rows,
      cols: req.tty?.cols,
    }));
    if (req.stdin !== undefined && payloadStdin === undefined) {
      // Too big for one frame: stream it under flow control, then close.
      void handle.writeStdin(req.stdin).then(() => { if (!req.stdinOpen) handle.closeStdin(); });
    }
    return handle;
  }

  /**
   * Runs to completion and buffers the output. The guest enforces outputCap; the host keeps at
   * most that much too (a guest that ignores it costs CPU, never memory) and says so in `truncated`.
   */
  async run(req: ExecRequest): Promise<ExecResult> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let room = req.outputCap || Infinity;
    let cut = false;
    const keep = (into: Buffer[]) => (b: Buffer) => {
      if (b.length > room) cut = true;
      if (room > 0) into.push(b.length > room ? b.subarray(0, room) : b);
      room -= Math.min(room, b.length);
    };
    const h = this.exec(req, { onStdout: keep(out), onStderr: keep(err) });
    const info = await h.exited;
    return { ...info, truncated: info.truncated || cut, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
  }

  /**
   * A TCP connection to 127.0.0.1:`port` in the guest, once the guest has connected
   * (PORT_NOT_LISTENING when nothing listens there, AGENT_TIMEOUT past `timeoutMs`).
   */
  async connectPort(port: number, timeoutMs: number): Promise<PortConnection> {
    if (this.closedError) throw this.closedError;
    if (!this.capabilities.includes('port')) {
      throw new EmberdError('AGENT_VERSION_MISMATCH', 'the guest agent cannot forward ports; rebuild the images with `emberd images build --force`');
    }
    const channel = this.allocChannel();
    const conn = new PortConnection(this, channel, port);
    this.ports.set(channel, conn);
    this.send(encodeMessage('CONNECT', channel, { port }));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new EmberdError('AGENT_TIMEOUT', `the guest did not connect to port ${port} within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([conn.connected, late]);
      return conn;
    } catch (e) {
      conn.destroy();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Open proxied connections. */
  portConnections(): PortConnection[] {
    return [...this.ports.values()];
  }

  /**
   * Before the VM is paused or saved: from now on frames are held back (suspendedState() keeps
   * them for the resumed guest), and a PING round trip makes sure the guest has read everything
   * sent before, so no byte the host wrote is lost in a buffer the saved state does not hold.
   * The stream may then end without failing any channel. Output the guest still sends is
   * received as usual until the stream ends.
   */
  async suspend(timeoutMs: number): Promise<void> {
    if (this.closedError) throw this.closedError;
    const payload = randomBytes(8);
    const reply = this.waitFor(MsgType.PONG, (f) => f.payload.equals(payload), timeoutMs, 'PONG');
    this.send(encodeFrame(MsgType.PING, 0, payload));
    this.suspended = true;
    try {
      await reply;
    } catch (e) {
      this.unsuspend();
      throw e;
    }
  }

  /**
   * Once the VMM has stopped the guest: lets the event loop read whatever the VMM had written to
   * the stream before (QEMU answers QMP `stop` only after its earlier writes), until a few turns
   * bring nothing new, so the host's state matches the stopped guest's.
   */
  async drain(): Promise<void> {
    for (let quiet = 0, turns = 0; quiet < 3 && turns < 200; turns++) {
      const before = this.received;
      await new Promise((r) => setImmediate(r));
      quiet = this.received === before ? quiet + 1 : 0;
    }
  }

  /** A suspend that did not lead to a save: the held frames go out on the same stream. */
  unsuspend(): void {
    if (!this.suspended) return;
    this.suspended = false;
    const held = this.held;
    this.held = [];
    if (this.stream.destroyed) {
      this.end(new EmberdError('AGENT_DISCONNECTED', 'the control channel to the guest closed while the sandbox was being saved'));
      return;
    }
    for (const f of held) this.send(f);
  }

  /** Open channels (execs still running as far as the host knows). */
  channels(): ExecHandle[] {
    return [...this.execs.values()];
  }

  /** After suspend() and the end of the stream: what a client on the resumed guest needs. */
  suspendedState(): AgentState {
    // Proxied connections stay with this client (a fork's parent) or end (a pause): their frames
    // are not the saved guest's business.
    const held = this.held.filter((f) => !this.ports.has(f.readUInt32BE(4)));
    return { nextChannel: this.nextChannel, channels: this.channels().map((h) => h.state()), held };
  }

  /**
   * On a new stream to a guest restored from a saved state: takes the saved channels back, each
   * with its callbacks (no host deadline: the guest enforces the exec's own timeout), and sends
   * the frames held back at the save. Call once, after the handshake.
   */
  adopt(state: AgentState, callbacksOf: (channel: number) => ExecCallbacks): Map<number, ExecHandle> {
    const handles = new Map<number, ExecHandle>();
    this.nextChannel = state.nextChannel;
    for (const c of state.channels) {
      const h = new ExecHandle(this, c.channel, callbacksOf(c.channel), undefined, c);
      this.execs.set(c.channel, h);
      handles.set(c.channel, h);
    }
    for (const f of state.held) this.send(f);
    return handles;
  }

  /**
   * A suspended client whose guest was saved and goes on elsewhere (a new client adopted its
   * state): its channels are dropped without failing, their host deadlines cleared.
   */
  abandon(): void {
    for (const h of this.execs.values()) h.abandon();
    this.execs.clear();
    for (const p of [...this.ports.values()]) p.abandon();
    this.held = [];
    this.stream.destroy();
  }

  /** Asks the guest to power off; the VMM process then exits. */
  shutdown(): void {
    if (!this.closedError) this.send(encodeMessage('SHUTDOWN', 0));
  }

  close(): void {
    this.stream.destroy();
  }

  /** @internal */
  send(frame: Buffer): void {
    if (this.suspended) { this.held.push(frame); return; }
    if (this.closedError || this.stream.destroyed) return;
    if (this.stream.writableLength > MAX_UNREAD_BYTES) {
      this.violation(`the guest has not read ${this.stream.writableLength} bytes the host sent; it is stuck or does not follow the protocol`);
      return;
    }
    this.stream.write(frame);
  }

  /**
   * The guest broke the protocol in a way the host cannot work around: every exec fails with
   * AGENT_PROTOCOL and the connection is closed (the sandbox then fails: its guest is untrusted).
   * @internal
   */
  violation(message: string): void {
    if (this.closedError) return;
    this.opts.onProtocolError?.('PROTOCOL_VIOLATION', message);
    this.end(new EmberdError('AGENT_PROTOCOL', `${message}; the sandbox was stopped`));
    this.stream.destroy();
  }

  /** @internal */
  release(channel: number): void {
    this.execs.delete(channel);
    this.ports.delete(channel);
  }

  private allocChannel(): number {
    for (;;) {
      const c = this.nextChannel;
      this.nextChannel = this.nextChannel >= 0x7fffffff ? 1 : this.nextChannel + 1;
      if (!this.execs.has(c) && !this.ports.has(c)) return c;
    }
  }

  private dispatch(f: Frame): void {
    try {
      const port = f.channel !== 0 ? this.ports.get(f.channel) : undefined;
      if (port) { port.handle(f); return; }
      if (f.channel !== 0 && this.execs.has(f.channel)) {
        const h = this.execs.get(f.channel)!;
        if (f.type === MsgType.ERROR) {
          const e = fieldsToObject(f.type, decodeTlv(f.type, f.payload));
          h.fail(new EmberdError('AGENT_PROTOCOL', `the guest refused exec channel ${f.channel}: ${String(e.code)}: ${String(e.message)}`));
        } else {
          h.handle(f);
        }
        return;
      }
      if (f.type === MsgType.ERROR) {
        const e = fieldsToObject(f.type, decodeTlv(f.type, f.payload));
        this.opts.onProtocolError?.(String(e.code), String(e.message));
        return;
      }
      for (const w of this.waiters) {
        if (w.type === f.type && w.match(f)) { this.waiters.delete(w); w.resolve(f); return; }
      }
    } catch (e) {
      this.violation(`the guest sent a malformed ${f.type.toString(16)} frame (${(e as Error).message})`);
    }
  }

  private waitFor(type: number, match: (f: Frame) => boolean, timeoutMs: number, what: string): Promise<Frame> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise<Frame>((resolve, reject) => {
      const w = {
        type,
        match,
        resolve: (f: Frame) => { clearTimeout(timer); resolve(f); },
        reject: (e: Error) => { clearTimeout(timer); reject(e); },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new EmberdError('AGENT_TIMEOUT', `no ${what} from the guest within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }
}
