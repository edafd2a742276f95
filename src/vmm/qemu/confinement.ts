// What confines each QEMU on this host, decided once when the backend is made (`--qemu-confine`,
// `--qemu-uid`, `--qemu-gid`). Pure over the host facts it is given, so every branch is tested.
//
//   emberd as root:  QEMU never runs as root: setpriv switches to --qemu-uid/--qemu-gid (default
//                    65534 nobody/nogroup, no supplementary groups, no_new_privs) before exec,
//                    keeping only CAP_SYS_CHROOT, which QEMU's own -chroot uses once it has opened
//                    its files; new pid, net and ipc namespaces; a cgroup v2 per VM.
//   emberd as user:  QEMU runs as that user (root is not needed or available); where unprivileged
//                    user namespaces work, new user, pid, net and ipc namespaces; no chroot (it
//                    needs CAP_SYS_CHROOT, and a chroot owned by QEMU's own uid can be escaped),
//                    no cgroup.
//   always:          seccomp (-sandbox on, spawn=deny included), and no network device.
import type { CgroupHost, CgroupProbe } from '../confine/cgroup-v2.ts';
import { describeCgroups } from '../confine/cgroup-v2.ts';

export type ConfineMode = 'auto' | 'off';

export interface QemuConfineOptions {
  /** auto (default): as far as this host allows; off: QEMU as emberd's own user, seccomp only */
  mode?: ConfineMode;
  /** the identity QEMU runs as when emberd is root (default 65534:65534) */
  uid?: number;
  gid?: number;
}

export interface HostFacts {
  isRoot: boolean;
  /** emberd's own uid, for the words */
  uid: number;
  setpriv?: string;
  unshare?: string;
  /** whether `unshare --user --map-current-user --pid --net --ipc --fork` works for a non-root emberd */
  usernsWorks: () => boolean;
  cgroups: CgroupProbe;
}

export interface QemuConfinement {
  /** root: the uid/gid setpriv switches to before QEMU runs */
  drop?: { uid: number; gid: number };
  /** QEMU chroots (`-chroot`) into the VM's empty, root-owned jail root after opening its files */
  chroot: boolean;
  /** new pid, net and ipc namespaces: 'plain' (root) or inside a new user namespace (non-root) */
  namespaces?: 'plain' | 'user';
  cgroups?: CgroupHost;
  /** one line for the backend's info: what holds */
  summary: string;
  /** what does not hold here, and why */
  warnings: string[];
}

export const DEFAULT_QEMU_UID = 65534;
export const DEFAULT_QEMU_GID = 65534;

const SECCOMP = 'seccomp (-sandbox on, spawn=deny)';

export function planConfinement(o: QemuConfineOptions, host: HostFacts): QemuConfinement {
  if (o.mode === 'off') {
    return {
      chroot: false,
      summary: `off (--qemu-confine off): QEMU runs as uid ${host.uid}, ${SECCOMP} only`,
      warnings: [`QEMU confinement is off (--qemu-confine off): QEMU runs as uid ${host.uid}${host.isRoot ? ' (root): an escape from QEMU is host root' : ''}, with seccomp but no uid change, chroot, namespaces or cgroup.`],
    };
  }
  const warnings: string[] = [];
  if (host.isRoot) {
    const missing = ['setpriv', 'unshare'].filter((t) => !host[t as 'setpriv' | 'unshare']);
    if (missing.length) {
      return {
        chroot: false,
        summary: `QEMU runs as root, ${SECCOMP} only (${missing.join(' and ')} not found)`,
        warnings: [`${missing.join(' and ')} (util-linux) not found: QEMU runs as root, unconfined but for seccomp: an escape from QEMU is host root. Install util-linux.`],
      };
    }
    const drop = { uid: o.uid ?? DEFAULT_QEMU_UID, gid: o.gid ?? DEFAULT_QEMU_GID };
    if (!host.cgroups.host) warnings.push(`QEMU gets no cgroup: ${host.cgroups.why}.`);
    else if (host.cgroups.host.missing.length) warnings.push(`QEMU cgroup limits: ${describeCgroups(host.cgroups)}.`);
    return {
      drop,
      chroot: true,
      namespaces: 'plain',
      cgroups: host.cgroups.host,
      summary: `uid ${drop.uid}:${drop.gid} (CAP_SYS_CHROOT only), chroot into an empty dir, pid/net/ipc namespaces, ${SECCOMP}, ${describeCgroups(host.cgroups)}`,
      warnings,
    };
  }
  const userns = !!host.unshare && host.usernsWorks();
  warnings.push(`emberd is not root: QEMU runs as uid ${host.uid} (emberd's own) and can read and write what that user can; no chroot and no cgroup (both need root). Run emberd as root for the full confinement.`);
  if (!userns) warnings.push(host.unshare ? 'unprivileged user namespaces do not work here, so QEMU shares emberd\'s pid and network namespaces (it could signal emberd\'s processes and open network connections).' : 'unshare (util-linux) not found: QEMU shares emberd\'s pid and network namespaces.');
  return {
    chroot: false,
    namespaces: userns ? 'user' : undefined,
    summary: `uid ${host.uid} (emberd's own), ${userns ? 'user/pid/net/ipc namespaces, ' : ''}${SECCOMP}, no chroot, no cgroup`,
    warnings,
  };
}
