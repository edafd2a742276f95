// sb.ports: servers in the sandbox reached from the host through the daemon, with no network
// device in the guest (docs/network.md "Ports"): expose a port, list, close.
import { EmberdError, type EmberdClient, type PortInfo } from './client.ts';

/** An exposed port; `url` is what a caller fetches (HTTP and WebSockets). */
export interface ExposedPort {
  port: number;
  /** `http://127.0.0.1:7777/sandboxes/{id}/ports/8000/`: the server's `/` is this URL; the daemon's auth applies (send its bearer token with --auth on). */
  url: string;
  /** The same as a path on the daemon: `/sandboxes/{id}/ports/8000/`. */
  path: string;
  /** `127.0.0.1:N`, a plain TCP listener that checks no token; null when there is none. */
  host: string | null;
  createdAt: string;
  /** Proxied connections open now, and so far. */
  connections: number;
  connectionsTotal: number;
  /** Bytes carried to the sandbox and back from it. */
  bytesIn: number;
  bytesOut: number;
}

export class Ports {
  private readonly client: EmberdClient;
  private readonly sandboxId: string;

  constructor(client: EmberdClient, sandboxId: string) {
    this.client = client;
    this.sandboxId = sandboxId;
  }

  /**
   * Exposes `port` (the server need not listen yet); exposing it again answers it as it is.
   * `tcp`: also a plain 127.0.0.1 listener (default: only when the daemon runs without auth).
   * TOO_MANY_PORTS past 32.
   */
  async expose(port: number, opts: { tcp?: boolean } = {}): Promise<ExposedPort> {
    return toPort(await this.client.exposePort(this.sandboxId, port, opts));
  }

  /** The exposed ports with their counters, by port number. */
  async list(): Promise<ExposedPort[]> {
    return (await this.client.listPorts(this.sandboxId)).map(toPort);
  }

  /** PORT_NOT_FOUND when it is not exposed. */
  async get(port: number): Promise<ExposedPort> {
    return toPort(await this.client.getPort(this.sandboxId, port));
  }

  /** Closes it and every connection through it. false when it was not exposed. */
  async close(port: number): Promise<boolean> {
    try {
      await this.client.closePort(this.sandboxId, port);
      return true;
    } catch (e) {
      if (e instanceof EmberdError && e.code === 'PORT_NOT_FOUND') return false;
      throw e;
    }
  }
}

function toPort(p: PortInfo): ExposedPort {
  return {
    port: p.port, url: p.url, path: p.path, host: p.host, createdAt: p.created_at, connections: p.connections,
    connectionsTotal: p.connections_total, bytesIn: p.bytes_in, bytesOut: p.bytes_out,
  };
}
