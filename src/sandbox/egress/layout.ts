// Names and addresses of one sandbox's egress plumbing (docs/network.md "Egress"). Pure.
//
//   guest eth0 10.255.255.2/30 --tap0 (10.255.255.1, in the sandbox's netns; owned by QEMU's uid)
//     netns emberd-<tag>-<id>: nft table `inet emberd` (the allowlist), tc rate limits,
//     routes and masquerades out of
//   veth0 10.231.X.Y+2/30 ==== <host-veth> 10.231.X.Y+1/30 (host netns; the resolver listens here)
//
// Every sandbox's netns has the same guest-side /30 (the netns masquerades); the veth /30s come
// out of 10.231.0.0/16, one per live sandbox. <tag> names the daemon (its run base), so a daemon
// start removes what a crashed predecessor with the same run base left, and only that.
import { createHash } from 'node:crypto';
import { formatIpv4, parseCidr, type Cidr } from './policy.ts';

export const PLUMBING = parseCidr('10.231.0.0/16')!;
export const GUEST_NET = { guest: '10.255.255.2', gateway: '10.255.255.1', prefix: 30 } as const;
export const TAP = 'tap0';
export const UPLINK = 'veth0';
/** Guest MAC: locally administered, the same in every sandbox (each is alone on its tap). */
export const GUEST_MAC = '02:eb:00:00:00:02';
/**
 * The tap's (the guest's gateway's) MAC, fixed too: a resumed or forked guest still has the
 * gateway in its ARP cache, and a tap with a new random MAC would drop every frame sent to it.
 */
export const GATEWAY_MAC = '02:eb:00:00:00:01';
export const MAX_SLOTS = 1 << 14; // /30s in a /16

export interface EgressNames {
  /** 4 hex: the daemon's tag in interface names (15 bytes at most) */
  tag: string;
  /** `emberd-<tag>-` : every netns of this daemon */
  netnsPrefix: string;
  /** `eb<tag>`: every host-side veth of this daemon */
  vethPrefix: string;
  /** the host table of this daemon: forwarding, masquerade, what the veths may reach on the host */
  hostTable: string;
}

export function egressNames(runBase: string): EgressNames {
  const tag = createHash('sha256').update(runBase).digest('hex').slice(0, 4);
  return { tag, netnsPrefix: `emberd-${tag}-`, vethPrefix: `eb${tag}`, hostTable: `emberd_${tag}` };
}

export interface SlotLayout {
  netns: string;
  hostVeth: string;
  hostAddr: string;
  nsAddr: string;
  /** the /30 */
  net: Cidr;
}

export function slotLayout(names: EgressNames, id: string, slot: number): SlotLayout {
  if (slot < 0 || slot >= MAX_SLOTS) throw new RangeError(`egress slot ${slot} out of range`);
  const base = PLUMBING.addr + slot * 4;
  return {
    netns: `${names.netnsPrefix}${id}`,
    hostVeth: `${names.vethPrefix}${slot.toString(36)}`,
    hostAddr: formatIpv4(base + 1),
    nsAddr: formatIpv4(base + 2),
    net: { addr: base, prefix: 30 },
  };
}

/** The kernel command-line word emberd-init configures eth0 from (guest/src/net.c). */
export function guestKernelArg(): string {
  return `emberd.net=${GUEST_NET.guest}/${GUEST_NET.prefix},${GUEST_NET.gateway}`;
}
