// The nftables rulesets of egress, as `nft -f` text. Pure: the unit tests pin what is allowed.
//
// In the sandbox's netns (table inet emberd, gone with the netns), for what the guest sends:
//   1. replies of accepted connections                       -> accept (counted: rx / tx)
//   2. DNS to the gateway                                     -> DNAT to the daemon's resolver
//   3. anything else to the plumbing range (host veth, other sandboxes) -> refused
//   4. @explicit (entries inside a special range)             -> accept
//   5. @special (private, link-local, loopback, ...; host addrs) -> refused
//   6. @allow (listed CIDRs), @resolved (answers of allowed names) -> accept
//   7. everything else                                        -> refused (TCP reset, else ICMP admin-prohibited)
// IPv6 is refused outright. The netns itself accepts nothing from the guest (input policy drop).
import { formatCidr, parseCidr, SPECIAL_RANGES, type Cidr, type EgressPolicy } from './policy.ts';
import { GUEST_NET, PLUMBING, TAP, UPLINK } from './layout.ts';

export interface SandboxRuleset {
  policy: EgressPolicy;
  /** the host's own IPv4 addresses, refused unless an @explicit entry covers them */
  hostAddrs: string[];
  /** where the guest's DNS goes (the daemon's resolver, on the host end of the veth) */
  resolver: { addr: string; port: number };
}

/** The table's name inside every sandbox netns. */
export const SANDBOX_TABLE = 'emberd';

function elements(cs: string[]): string {
  return cs.length ? ` elements = { ${cs.join(', ')} };` : '';
}

/** Drops overlapping entries (nft refuses overlapping interval elements): a contained one adds nothing. */
export function disjoint(cs: Cidr[]): Cidr[] {
  const sorted = [...cs].sort((a, b) => a.prefix - b.prefix || a.addr - b.addr);
  const out: Cidr[] = [];
  for (const c of sorted) if (!out.some((o) => c.prefix >= o.prefix && ((c.addr >>> (32 - o.prefix)) === (o.addr >>> (32 - o.prefix)) || o.prefix === 0))) out.push(c);
  return out.sort((a, b) => a.addr - b.addr);
}

export function sandboxRuleset(r: SandboxRuleset): string {
  const special = disjoint([...SPECIAL_RANGES.map((s) => parseCidr(s)!), ...r.hostAddrs.map((a) => parseCidr(a)!)]).map(formatCidr);
  const explicit = disjoint(r.policy.explicit).map(formatCidr);
  const allow = disjoint(r.policy.cidrs).map(formatCidr);
  const { addr, port } = r.resolver;
  return `table inet ${SANDBOX_TABLE} {
  counter tx { }
  counter rx { }
  counter refused { }
  set special { type ipv4_addr; flags interval;${elements(special)} }
  set explicit { type ipv4_addr; flags interval;${elements(explicit)} }
  set allow { type ipv4_addr; flags interval;${elements(allow)} }
  set resolved { type ipv4_addr; flags timeout; }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${TAP}" ip daddr ${GUEST_NET.gateway} udp dport 53 dnat ip to ${addr}:${port}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${UPLINK}" masquerade
  }
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname "lo" accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    iifname "${UPLINK}" oifname "${TAP}" ct state established,related counter name rx accept
    iifname "${TAP}" oifname "${UPLINK}" jump outbound
  }
  chain outbound {
    ct state established,related counter name tx accept
    meta nfproto ipv6 goto refuse
    ip daddr ${addr} udp dport ${port} ct status dnat counter name tx accept
    ip daddr ${formatCidr(PLUMBING)} goto refuse
    ip daddr @explicit counter name tx accept
    ip daddr @special goto refuse
    ip daddr @allow counter name tx accept
    ip daddr @resolved counter name tx accept
    goto refuse
  }
  chain refuse {
    counter name refused
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }
}
`;
}

/** `nft` input adding resolved addresses of an allowed name (kept for `ttlS`, then re-resolved). */
export function resolvedElements(addrs: string[], ttlS: number): string {
  return `add element inet ${SANDBOX_TABLE} resolved { ${addrs.map((a) => `${a} timeout ${ttlS}s`).join(', ')} }\n`;
}

/**
 * The daemon's table in the host netns: forwarding for its veths only (replies back in, nothing
 * else out to them), masquerade of the plumbing range towards the host's uplinks, and, from the
 * veths to the host itself, only the resolvers' UDP ports (set `dns`).
 * `guardForwarding`: emberd turned ip_forward on itself, so forwarding not involving its veths is
 * dropped, as it was before.
 */
export function hostRuleset(table: string, vethPrefix: string, guardForwarding: boolean): string {
  const v = `"${vethPrefix}*"`;
  return `table ip ${table} {
  set dns { type inet_service; }
  chain input {
    type filter hook input priority filter - 5; policy accept;
    iifname ${v} ct state established,related accept
    iifname ${v} udp dport @dns accept
    iifname ${v} drop
  }
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    iifname ${v} accept
    oifname ${v} ct state established,related accept
    oifname ${v} drop${guardForwarding ? `
    drop` : ''}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${formatCidr(PLUMBING)} oifname != ${v} masquerade
  }
}
`;
}
