// A sandbox's egress allowlist: CIDRs and host names, parsed and sorted into what the ruleset
// needs. Pure. docs/network.md "Egress" is the model: only listed destinations, and the special
// ranges below only when an entry lies inside one of them (0.0.0.0/0 does not open them).
import { EmberdError } from '../../errors.ts';

export interface Cidr { addr: number; prefix: number }

export interface EgressPolicy {
  /** entries outside every special range: checked after the special ranges are refused */
  cidrs: Cidr[];
  /** entries inside a special range (or a host address): the explicit exceptions, checked first */
  explicit: Cidr[];
  /** lower-case host names without a trailing dot; resolved by the sandbox's resolver */
  names: string[];
  /** Mbit/s each way, or undefined: unlimited */
  rateMbit?: number;
}

/** Private, shared (CGNAT), link-local (metadata 169.254.169.254 included), loopback, "this network", multicast, reserved. */
export const SPECIAL_RANGES = ['0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16', '224.0.0.0/4', '240.0.0.0/4'];

export const MAX_ALLOW_ENTRIES = 256;

const NAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

export function parseIpv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p, i) => p > 255 || (m[i + 1]!.length > 1 && m[i + 1]!.startsWith('0')))) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function formatIpv4(a: number): string {
  return [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
}

/** "a.b.c.d" or "a.b.c.d/p" with no host bits set past the prefix; undefined if not that. */
export function parseCidr(s: string): Cidr | undefined {
  const [a, p, ...rest] = s.split('/');
  if (rest.length || a === undefined) return undefined;
  const addr = parseIpv4(a);
  if (addr === undefined) return undefined;
  const prefix = p === undefined ? 32 : /^\d{1,2}$/.test(p) ? Number(p) : NaN;
  if (!(prefix >= 0 && prefix <= 32)) return undefined;
  if ((addr & ~mask(prefix)) >>> 0 !== 0) return undefined;
  return { addr, prefix };
}

export function formatCidr(c: Cidr): string {
  return c.prefix === 32 ? formatIpv4(c.addr) : `${formatIpv4(c.addr)}/${c.prefix}`;
}

/** Whether `inner` lies wholly inside `outer`. */
export function within(inner: Cidr, outer: Cidr): boolean {
  return inner.prefix >= outer.prefix && ((inner.addr & mask(outer.prefix)) >>> 0) === outer.addr;
}

export function contains(c: Cidr, addr: number): boolean {
  return ((addr & mask(c.prefix)) >>> 0) === c.addr;
}

/**
 * The policy of `allow` (the request's `network.allow`), or INVALID_REQUEST naming the bad entry.
 * `hostAddrs` are the host's own addresses: an entry inside one is an explicit exception too.
 */
export function parsePolicy(allow: string[], hostAddrs: number[] = [], rateMbit?: number): EgressPolicy {
  if (allow.length > MAX_ALLOW_ENTRIES) throw new EmberdError('INVALID_REQUEST', `network.allow has ${allow.length} entries; at most ${MAX_ALLOW_ENTRIES}`);
  const special = [...SPECIAL_RANGES.map((r) => parseCidr(r)!), ...hostAddrs.map((addr) => ({ addr, prefix: 32 }))];
  const policy: EgressPolicy = { cidrs: [], explicit: [], names: [], rateMbit };
  for (const raw of allow) {
    const e = raw.trim().toLowerCase();
    if (/^[\d./]+$/.test(e)) {
      const c = parseCidr(e);
      if (!c) throw new EmberdError('INVALID_REQUEST', `network.allow entry "${raw}" is not an IPv4 address or CIDR (such as 203.0.113.7 or 198.51.100.0/24, with no bits set past the prefix)`);
      (special.some((s) => within(c, s)) ? policy.explicit : policy.cidrs).push(c);
    } else if (e.includes(':')) {
      throw new EmberdError('INVALID_REQUEST', `network.allow entry "${raw}": IPv6 is not supported; sandboxes get IPv4 only`);
    } else {
      const name = e.endsWith('.') ? e.slice(0, -1) : e;
      if (!NAME.test(name)) throw new EmberdError('INVALID_REQUEST', `network.allow entry "${raw}" is neither an IPv4 CIDR nor a host name (letters, digits, - and _ in dot-separated labels)`);
      if (!policy.names.includes(name)) policy.names.push(name);
    }
  }
  return policy;
}
