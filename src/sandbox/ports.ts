// A sandbox's exposed ports (docs/network.md, "Ports"): for each, the path under the daemon that
// proxies HTTP and WebSockets to it (port-proxy.ts), and optionally a TCP listener on 127.0.0.1
// whose connections are carried, one channel each, to 127.0.0.1:PORT in the guest. No network
// device is involved: everything goes over the control channel.
import { createServer, type Server, type Socket } from 'node:net';
import type { PortConnection } from '../agent/port-channel.ts';
import { EmberdError } from '../errors.ts';
import type { Logger } from '../log.ts';

/** The most ports one sandbox may expose at once. */
export const MAX_PORTS = 32;
/**
 * The most proxied connections one sandbox may have open at once. The guest allows 256, but each
 * may queue up to a window (256 KiB) of what the host sent in PID 1, whose memory is outside the
 * exec cgroup: 64 keep that under 16 MiB.
 */
export const MAX_CONNECTIONS = 64;

export interface PortView {
  port: number;
  /** The path under the daemon that proxies HTTP (and WebSockets) to it; the daemon's auth applies. */
  path: string;
  /** `127.0.0.1:N` for plain TCP, when opened with `tcp` (no auth on it: any local user can connect). */
  host: string | null;
  created_at: string;
  /** Proxied connections open now, and since the port was opened. */
  connections: number;
  connections_total: number;
  /** Bytes carried to the guest and from it, over every connection so far. */
  bytes_in: number;
  bytes_out: number;
}

type Connect = () => Promise<PortConnection>;

interface Exposed {
  port: number;
  createdAt: Date;
  connect: Connect;
  listener: Server | undefined;
  hostPort: number | undefined;
  open: Set<PortConnection>;
  /** The listener's clients, ended with the port. */
  sockets: Set<Socket>;
  total: number;
  bytesIn: number;
  bytesOut: number;
}

export function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new EmberdError('INVALID_REQUEST', `port ${port} is not a TCP port; use 1-65535`);
  }
}

export class PortForwards {
  private readonly id: string;
  private readonly log: Logger;
  private readonly exposed = new Map<number, Exposed>();
  private closed = false;

  constructor(id: string, log: Logger) {
    this.id = id;
    this.log = log;
  }

  /**
   * Exposes `port` (idempotent: an exposed port is answered as it is, `created` false; `tcp` on a
   * second call adds the listener). `connect` opens one connection to it in the guest.
   */
  async open(port: number, o: { tcp: boolean }, connect: Connect): Promise<{ view: PortView; created: boolean }> {
    checkPort(port);
    if (this.closed) throw new EmberdError('SANDBOX_NOT_FOUND', `sandbox ${this.id} is being destroyed`);
    let e = this.exposed.get(port);
    const created = e === undefined;
    if (!e) {
      if (this.exposed.size >= MAX_PORTS) throw new EmberdError('TOO_MANY_PORTS', `sandbox ${this.id} already exposes ${MAX_PORTS} ports; close one with DELETE /sandboxes/${this.id}/ports/{port} first`);
      e = { port, createdAt: new Date(), connect, listener: undefined, hostPort: undefined, open: new Set(), sockets: new Set(), total: 0, bytesIn: 0, bytesOut: 0 };
      this.exposed.set(port, e);
    }
    if (o.tcp && !e.listener) await this.listen(e);
    return { view: this.view(e), created };
  }

  list(): PortView[] {
    return [...this.exposed.values()].sort((a, b) => a.port - b.port).map((e) => this.view(e));
  }

  get(port: number): PortView {
    return this.view(this.find(port));
  }

  /** Closes the port: its listener, and every connection open through it. */
  async close(port: number): Promise<void> {
    const e = this.find(port);
    this.exposed.delete(port);
    await this.shut(e);
  }

  /** With the sandbox: every port closed; no new one opens. */
  async closeAll(): Promise<void> {
    this.closed = true;
    const all = [...this.exposed.values()];
    this.exposed.clear();
    await Promise.all(all.map((e) => this.shut(e)));
  }

  /** Before a pause: the open connections end (their peers see a reset); the ports stay exposed. */
  endConnections(): void {
    for (const e of this.exposed.values()) for (const c of e.open) c.destroy();
  }

  /** One connection to the exposed `port` in the guest (for the HTTP proxy), counted as its own. */
  async connect(port: number): Promise<PortConnection> {
    const e = this.find(port);
    const open = [...this.exposed.values()].reduce((n, x) => n + x.open.size, 0);
    if (open >= MAX_CONNECTIONS) throw new EmberdError('TOO_MANY_CONNECTIONS', `sandbox ${this.id} already has ${MAX_CONNECTIONS} proxied connections open; close some first`);
    const conn = await e.connect();
    e.open.add(conn);
    e.total++;
    conn.once('close', () => {
      e.open.delete(conn);
      e.bytesIn += conn.bytesToGuest;
      e.bytesOut += conn.bytesFromGuest;
    });
    return conn;
  }

  private find(port: number): Exposed {
    checkPort(port);
    const e = this.exposed.get(port);
    if (!e) throw new EmberdError('PORT_NOT_FOUND', `sandbox ${this.id} does not expose port ${port}; expose it first with POST /sandboxes/${this.id}/ports {"port": ${port}}`);
    return e;
  }

  private async listen(e: Exposed): Promise<void> {
    // No Nagle: it would hold a server's second small write (an answer's body after its head) for
    // the client's delayed ACK, 40 ms a request (measured: 52.8 -> see bench/ports.ts).
    // Half-open: a client that is done sending (shutdown SHUT_WR) still reads the answer, as TCP allows.
    const server = createServer({ pauseOnConnect: true, noDelay: true, allowHalfOpen: true }, (socket) => { void this.accept(e, socket); });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen({ host: '127.0.0.1', port: 0 }, () => { server.off('error', rej); res(); });
    });
    e.listener = server;
    e.hostPort = (server.address() as { port: number }).port;
  }

  /** A TCP client of the listener: bytes both ways once the guest has connected; else a reset. */
  private async accept(e: Exposed, socket: Socket): Promise<void> {
    socket.on('error', () => {});
    e.sockets.add(socket);
    socket.once('close', () => e.sockets.delete(socket));
    let conn: PortConnection;
    try {
      conn = await this.connect(e.port);
    } catch (err) {
      this.log.debug({ port: e.port, code: (err as EmberdError).code }, 'proxied TCP connection refused');
      socket.resetAndDestroy();
      return;
    }
    if (socket.destroyed) { conn.destroy(); return; }
    conn.on('error', () => socket.resetAndDestroy());
    socket.on('error', () => conn.destroy());
    socket.on('close', () => conn.destroy());
    conn.on('close', () => { if (!socket.destroyed) socket.end(); });
    socket.pipe(conn);
    conn.pipe(socket);
    socket.resume();
  }

  private async shut(e: Exposed): Promise<void> {
    for (const c of e.open) c.destroy();
    for (const s of e.sockets) s.destroy();
    if (e.listener) await new Promise<void>((res) => e.listener!.close(() => res()));
  }

  private view(e: Exposed): PortView {
    let bytesIn = e.bytesIn;
    let bytesOut = e.bytesOut;
    for (const c of e.open) { bytesIn += c.bytesToGuest; bytesOut += c.bytesFromGuest; }
    return {
      port: e.port,
      path: `/sandboxes/${this.id}/ports/${e.port}/`,
      host: e.hostPort === undefined ? null : `127.0.0.1:${e.hostPort}`,
      created_at: e.createdAt.toISOString(),
      connections: e.open.size,
      connections_total: e.total,
      bytes_in: bytesIn,
      bytes_out: bytesOut,
    };
  }
}
