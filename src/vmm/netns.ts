// Putting a VMM into a sandbox's named network namespace (docs/network.md "How QEMU gets the
// tap"): the netns (made by src/sandbox/egress/) holds the tap the VMM attaches to. QEMU and a
// non-jailed Firecracker get it through `nsenter --net=PATH --` in their wrapper chain (setns,
// then exec: no fork, the VMM stays the same process); the jailer joins it itself (`--netns`).
import { existsSync } from 'node:fs';
import type { GuestNetwork } from './backend.ts';

export const NSENTER = ['/usr/bin/nsenter', '/bin/nsenter'].find((p) => existsSync(p));

/** Where `ip netns add NAME` leaves the namespace handle. */
export function netnsPath(n: Pick<GuestNetwork, 'netns'>): string {
  return `/run/netns/${n.netns}`;
}

/** The wrapper words that join the netns at `path` and exec the rest of the chain. */
export function nsenterArgv(path: string, nsenter = NSENTER ?? 'nsenter'): string[] {
  return [nsenter, `--net=${path}`, '--'];
}
