// One proxied TCP connection to 127.0.0.1:PORT in the guest, as a Node Duplex (docs/protocol.md,
// "CONNECT, CONNECTED, CLOSE"). Writes go out as STDIN within the guest's credit; what the guest
// sends is pushed to the readable side, and its credit is handed back only once the reader has
// taken it (push() said there was room, or _read() asked for more), so a slow host client stops the
// guest reading its socket instead of filling the daemon's memory.
import { Duplex } from 'node:stream';
import { INITIAL_WINDOW, MsgType, decodeTlv, encodeFrame, encodeMessage, fieldsToObject, type Frame } from './codec.ts';
import { EmberdError } from '../errors.ts';

/** The largest data frame either side sends. */
const MAX_DATA_FRAME = 65536;

/** What a PortConnection needs of its AgentClient. */
export interface PortLink {
  send(frame: Buffer): void;
  release(channel: number): void;
  violation(message: string): void;
}

export class PortConnection extends Duplex {
  readonly channel: number;
  readonly port: number;
  /** Settles once the guest has connected to the port (or could not: PORT_NOT_LISTENING, PORT_CONNECT_FAILED). */
  readonly connected: Promise<void>;
  /** Bytes carried each way, for the port's counters. */
  bytesToGuest = 0;
  bytesFromGuest = 0;
  private readonly link: PortLink;
  private resolveConnected!: () => void;
  private rejectConnected!: (e: Error) => void;
  private isConnected = false;
  /** Credit for STDIN: what the host may still send. */
  private writeCredit = INITIAL_WINDOW;
  /** Credit the guest holds for STDOUT: what it may still send. */
  private readCredit = INITIAL_WINDOW;
  /** Bytes received but not granted back, because the readable side was full. */
  private withheld = 0;
  private pending: { chunk: Buffer; done: (e?: Error | null) => void } | undefined;
  private finishing: (() => void) | undefined;
  /** The guest sent CLOSE (or the connection to the guest ended): no CLOSE is owed. */
  private guestClosed = false;

  constructor(link: PortLink, channel: number, port: number) {
    super({ allowHalfOpen: true });
    this.link = link;
    this.channel = channel;
    this.port = port;
    this.connected = new Promise((res, rej) => { this.resolveConnected = res; this.rejectConnected = rej; });
    this.connected.catch(() => {});
  }

  /** @internal Frames the guest sent on this channel. */
  handle(f: Frame): void {
    if (this.destroyed) { // only its CLOSE is still expected
      if (f.type === MsgType.CLOSE || f.type === MsgType.ERROR) { this.guestClosed = true; this.link.release(this.channel); }
      return;
    }
    switch (f.type) {
      case MsgType.CONNECTED:
        this.isConnected = true;
        this.resolveConnected();
        break;
      case MsgType.STDOUT:
        if (f.payload.length === 0) { this.push(null); break; }
        this.readCredit -= f.payload.length;
        if (this.readCredit < 0) {
          this.link.violation(`the guest sent ${-this.readCredit} bytes on port channel ${this.channel} beyond the credit it was given`);
          return;
        }
        this.bytesFromGuest += f.payload.length;
        if (this.push(f.payload)) this.grant(f.payload.length);
        else this.withheld += f.payload.length;
        break;
      case MsgType.WINDOW: {
        const w = fieldsToObject(f.type, decodeTlv(f.type, f.payload));
        this.writeCredit += Number(w.increment);
        this.pump();
        break;
      }
      case MsgType.CLOSE: {
        const c = fieldsToObject(f.type, decodeTlv(f.type, f.payload));
        this.closedByGuest(c.code === undefined ? undefined : String(c.code), String(c.message ?? ''));
        break;
      }
      case MsgType.ERROR: {
        const e = fieldsToObject(f.type, decodeTlv(f.type, f.payload));
        this.closedByGuest('ERROR', `${String(e.code)}: ${String(e.message)}`);
        break;
      }
      default:
        break;
    }
  }

  /** @internal The connection to the guest ended (or the sandbox is going away). */
  fail(err: Error): void {
    this.guestClosed = true;
    this.link.release(this.channel);
    this.rejectConnected(err);
    this.destroy(err);
  }

  /** @internal A saved guest goes on elsewhere: drop the channel without a word to it. */
  abandon(): void {
    this.fail(new EmberdError('AGENT_DISCONNECTED', `port ${this.port}: the sandbox was paused; connect again`));
  }

  private closedByGuest(code: string | undefined, message: string): void {
    this.guestClosed = true;
    this.link.release(this.channel);
    if (!this.isConnected) {
      this.rejectConnected(code === 'CONNECT_REFUSED'
        ? new EmberdError('PORT_NOT_LISTENING', `nothing listens on 127.0.0.1:${this.port} in the sandbox (${message || 'connection refused'}); start the server first, bound to 127.0.0.1 or 0.0.0.0`)
        : new EmberdError('PORT_CONNECT_FAILED', `the guest could not connect to 127.0.0.1:${this.port} (${code ?? 'closed'}: ${message})`));
      this.destroy();
      return;
    }
    if (code !== undefined) { this.destroy(new Error(`port ${this.port}: the guest closed the connection (${code}: ${message})`)); return; }
    // An orderly end: both directions are done (the guest sent its EOF before CLOSE).
    this.push(null);
    if (!this.writableEnded) this.end();
  }

  private grant(n: number): void {
    if (n <= 0 || this.guestClosed) return;
    this.readCredit += n;
    this.link.send(encodeMessage('WINDOW', this.channel, { increment: n }));
  }

  override _read(): void {
    const n = this.withheld;
    this.withheld = 0;
    this.grant(n);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null) => void): void {
    this.pending = { chunk, done };
    this.pump();
  }

  override _final(done: (e?: Error | null) => void): void {
    this.finishing = () => {
      if (!this.guestClosed) this.link.send(encodeFrame(MsgType.STDIN, this.channel));
      done();
    };
    this.pump();
  }

  private pump(): void {
    while (this.pending && !this.guestClosed) {
      const n = Math.min(this.pending.chunk.length, this.writeCredit, MAX_DATA_FRAME);
      if (n <= 0) return;
      this.link.send(encodeFrame(MsgType.STDIN, this.channel, this.pending.chunk.subarray(0, n)));
      this.writeCredit -= n;
      this.bytesToGuest += n;
      const rest = this.pending.chunk.subarray(n);
      if (rest.length > 0) { this.pending.chunk = rest; continue; }
      const { done } = this.pending;
      this.pending = undefined;
      done();
    }
    if (this.pending && this.guestClosed) {
      const { done } = this.pending;
      this.pending = undefined;
      done(new Error(`port ${this.port}: the connection is closed`));
    }
    if (!this.pending && this.finishing) {
      const f = this.finishing;
      this.finishing = undefined;
      f();
    }
  }

  override _destroy(err: Error | null, done: (e: Error | null) => void): void {
    // Both directions ended in order: the guest's CLOSE is on its way and frees the channel.
    const orderly = err === null && this.readableEnded && this.writableFinished;
    if (!this.guestClosed && !orderly) {
      this.guestClosed = true;
      this.link.send(encodeMessage('CLOSE', this.channel, {}));
      this.link.release(this.channel);
    }
    this.rejectConnected(err ?? new EmberdError('PORT_CONNECT_FAILED', `port ${this.port}: the connection was closed before the guest connected`));
    if (this.pending) { this.pending.done(err); this.pending = undefined; }
    done(err);
  }

  // node:http's client calls these on the socket it is given (createConnection); a channel has
  // nothing to tune.
  setNoDelay(): this { return this; }
  setKeepAlive(): this { return this; }
  setTimeout(): this { return this; }
  ref(): this { return this; }
  unref(): this { return this; }
}
