// One sandbox's DNS resolver: a UDP socket of the daemon on the host end of the sandbox's veth
// (the netns DNATs the guest's port-53 traffic to it). It answers only the allowlist's names:
// an A query is forwarded to the daemon's upstream (--egress-dns, else /etc/resolv.conf's first
// nameserver), and the answer's addresses are added to the sandbox's nft set before the guest
// sees them, so a connect right after the lookup is allowed. Other names are REFUSED, AAAA of an
// allowed name is an empty answer (IPv4 only), anything unparsable is dropped.
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { buildQuery, buildResponse, CLASS_IN, parseAnswer, parseQuery, RCODE_NOERROR, RCODE_REFUSED, RCODE_SERVFAIL, TYPE_A, TYPE_AAAA, type Query } from './dns-codec.ts';

export interface Upstream { host: string; port: number }

const UPSTREAM_TIMEOUT_MS = 2000;
/** How long a resolved address stays allowed, whatever the TTL said (seconds). */
export const MIN_ALLOW_S = 60;
export const MAX_ALLOW_S = 3600;

/** `HOST:PORT` or `HOST` (port 53); undefined if malformed. */
export function parseUpstream(s: string): Upstream | undefined {
  const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(s.trim());
  if (!m) return undefined;
  const port = m[2] ? Number(m[2]) : 53;
  return port > 0 && port < 65536 ? { host: m[1]!, port } : undefined;
}

/** The first IPv4 nameserver of resolv.conf, or undefined. */
export function systemUpstream(path = '/etc/resolv.conf'): Upstream | undefined {
  try {
    for (const line of readFileSync(path, 'utf8').split('\n')) {
      const m = /^\s*nameserver\s+([0-9.]+)\s*$/.exec(line);
      if (m) return { host: m[1]!, port: 53 };
    }
  } catch { /* none */ }
  return undefined;
}

export interface ResolverCounters { answered: number; refused: number; failed: number }

export class SandboxResolver {
  readonly counters: ResolverCounters = { answered: 0, refused: 0, failed: 0 };
  private readonly sock: Socket;
  private readonly names: Set<string>;
  private readonly upstream: Upstream | undefined;
  /** Adds resolved addresses to the sandbox's nft set; the answer waits for it. */
  private readonly allow: (addrs: string[], ttlS: number) => Promise<void>;

  private constructor(sock: Socket, names: string[], upstream: Upstream | undefined, allow: (addrs: string[], ttlS: number) => Promise<void>) {
    this.sock = sock;
    this.upstream = upstream;
    this.allow = allow;
    this.names = new Set(names);
    sock.on('message', (msg, rinfo) => { void this.answer(msg).then((out) => { if (out) sock.send(out, rinfo.port, rinfo.address); }); });
    sock.on('error', () => {});
  }

  /** Listens on `addr` (an ephemeral port: the host's port 53 may be taken by its own resolver). */
  static async listen(addr: string, names: string[], upstream: Upstream | undefined, allow: (addrs: string[], ttlS: number) => Promise<void>): Promise<SandboxResolver> {
    const sock = createSocket('udp4');
    await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind(0, addr, () => { sock.off('error', reject); resolve(); }); });
    return new SandboxResolver(sock, names, upstream, allow);
  }

  get port(): number { return this.sock.address().port; }

  close(): void {
    try { this.sock.close(); } catch { /* closed */ }
  }

  /** The reply to one datagram from the guest, or undefined to drop it. */
  async answer(msg: Buffer): Promise<Buffer | undefined> {
    let q: Query;
    try { q = parseQuery(msg); } catch { return undefined; }
    const { name, type, cls } = q.question;
    if (cls !== CLASS_IN || !this.names.has(name) || (type !== TYPE_A && type !== TYPE_AAAA)) {
      this.counters.refused++;
      return buildResponse(q, RCODE_REFUSED);
    }
    if (type === TYPE_AAAA) { this.counters.answered++; return buildResponse(q, RCODE_NOERROR); }
    try {
      const r = await this.resolve(name);
      if (r.a.length) await this.allow(r.a.map((x) => x.addr), Math.min(MAX_ALLOW_S, Math.max(MIN_ALLOW_S, ...r.a.map((x) => x.ttl))));
      this.counters.answered++;
      return buildResponse(q, r.rcode, r.a);
    } catch {
      this.counters.failed++;
      return buildResponse(q, RCODE_SERVFAIL);
    }
  }

  private resolve(name: string): Promise<ReturnType<typeof parseAnswer>> {
    const up = this.upstream;
    if (!up) return Promise.reject(new Error('no upstream resolver'));
    const id = randomInt(65536);
    const sock = createSocket('udp4');
    return new Promise<ReturnType<typeof parseAnswer>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('upstream timeout')), UPSTREAM_TIMEOUT_MS);
      sock.on('error', reject);
      sock.on('message', (m, rinfo) => {
        if (rinfo.address !== up.host || rinfo.port !== up.port) return;
        try { resolve(parseAnswer(m, id)); clearTimeout(timer); } catch { /* not ours: keep waiting */ }
      });
      sock.send(buildQuery(id, { name, type: TYPE_A, cls: CLASS_IN }), up.port, up.host);
    }).finally(() => sock.close());
  }
}
