// One VM's QEMU jail: its directory, the argv that starts QEMU confined, and the checks before.
//
//   <run dir>/v<n>/         QEMU's working directory, owned by QEMU's uid (0700): QEMU creates its
//                           QMP and control sockets here (relative paths) before it chroots; <n>
//                           differs for every start, so a connect attempt left over from a failed
//                           start can never reach the next start's sockets in the same run dir
//   <run dir>/v<n>/root/    the chroot: empty, root-owned, 0555 (nothing to write, no directory to
//                           chroot into again); during a snapshot save only `migrate.sock`, the
//                           socket emberd listens on, owned by QEMU's uid
//
// The run dir itself stays emberd's (0700): QEMU never resolves a path through it. The kernel,
// initramfs and pack are opened by emberd and inherited as fds 3, 4, 5, which QEMU opens as
// /proc/self/fd/N (the images' own modes still apply: they must be readable by QEMU's uid).
import { chmodSync, chownSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { EmberdError } from '../../errors.ts';
import type { QemuConfinement } from './confinement.ts';
import { nsenterArgv } from '../netns.ts';

/** A path as emberd reaches it on the host and as QEMU names it (relative to its cwd, or in its chroot). */
export interface JailPath { host: string; qemu: string }

export interface JailLayout {
  dir: string;
  root: string;
  control: JailPath;
  qmp: JailPath;
  migrate: JailPath;
}

/** fds 3, 4, 5 of QEMU, in this order */
export const BOOT_FILE_FDS = { kernel: 3, initramfs: 4, pack: 5 } as const;
/** fd 6 of a restoring QEMU: the decompressed migration stream (`-incoming fd:6`) */
export const INCOMING_FD = 6;
/** fd 7 of a QEMU whose RAM is a file (a shared-memory clone, or the VM filling that file): QEMU opens it as /proc/self/fd/7 */
export const MEMORY_FD = 7;

/**
 * `start` tells the starts in one run dir apart (a counter); it is written in base 36 and kept
 * to 3 digits, so the longest socket path stays within run-dir.ts's budget
 * ("/sb_<20>/v<3>/root/migrate.sock" is 47 bytes).
 */
export function jailLayout(runDir: string, chroot: boolean, start = 0): JailLayout {
  const dir = join(runDir, `v${(start % 36 ** 3).toString(36)}`);
  const root = join(dir, 'root');
  const migrateHost = join(chroot ? root : dir, 'migrate.sock');
  return {
    dir,
    root,
    control: { host: join(dir, 'control.sock'), qemu: 'control.sock' },
    qmp: { host: join(dir, 'qmp.sock'), qemu: 'qmp.sock' },
    migrate: { host: migrateHost, qemu: chroot ? '/migrate.sock' : migrateHost },
  };
}

/** Makes the jail afresh (a stale one of the same run dir is removed). */
export function prepareJail(layout: JailLayout, c: QemuConfinement): void {
  rmSync(layout.dir, { recursive: true, force: true });
  mkdirSync(layout.dir, { recursive: true, mode: 0o700 });
  if (c.drop) chownSync(layout.dir, c.drop.uid, c.drop.gid);
  if (c.chroot) {
    mkdirSync(layout.root, { mode: 0o555 });
    chmodSync(layout.root, 0o555); // whatever the umask
  }
}

export function removeJail(layout: JailLayout): void {
  rmSync(layout.dir, { recursive: true, force: true });
}

export interface WrapperTools { setpriv: string; unshare: string; sh: string; nsenter?: string }

/**
 * The commands between emberd's `setpriv --pdeathsig KILL --` and QEMU, each exec'ing the next:
 *  1. with a cgroup: sh moves itself (and so everything after) into it before anything else runs;
 *  1b. with a network (BootSpec.network): nsenter joins the sandbox's named netns, which holds
 *     its tap, and unshare then makes no net namespace of its own;
 *  2. unshare: new pid, net and ipc namespaces (a user namespace too for a non-root emberd); it
 *     forks QEMU as pid 1 of the new pid namespace and waits, dying by the signal QEMU died of;
 *     --kill-child ties QEMU to it;
 *  3. as root, setpriv: QEMU's uid/gid, no supplementary groups, only CAP_SYS_CHROOT (bounding,
 *     inheritable, ambient), no_new_privs, and PR_SET_PDEATHSIG again: a uid change clears it, so
 *     it is set after, and QEMU still dies with the unshare that dies with emberd.
 */
export function wrapperArgv(c: QemuConfinement, tools: WrapperTools, cgroupProcs?: string, netnsPath?: string): string[] {
  const out: string[] = [];
  if (cgroupProcs) out.push(tools.sh, '-c', 'echo $$ > "$0" && exec "$@"', cgroupProcs);
  if (netnsPath) out.push(...nsenterArgv(netnsPath, tools.nsenter));
  // A dropped QEMU opens /dev/net/tun, which may be root's alone (0600): in a mount namespace of
  // its own (private propagation: nothing reaches the host) /dev/net becomes a tmpfs holding only
  // a tun node owned by QEMU's uid. It can still attach only to a tap it owns (the kernel checks).
  const tun = !!netnsPath && !!c.drop && c.namespaces === 'plain';
  if (c.namespaces) out.push(tools.unshare, ...(c.namespaces === 'user' ? ['--user', '--map-current-user'] : []), '--pid', ...(netnsPath ? [] : ['--net']), '--ipc', ...(tun ? ['--mount'] : []), '--fork', '--kill-child', '--');
  if (tun) out.push(tools.sh, '-c', TUN_NODE_SCRIPT, `${c.drop!.uid}:${c.drop!.gid}`);
  if (c.drop) {
    out.push(
      tools.setpriv,
      '--reuid', String(c.drop.uid), '--regid', String(c.drop.gid), '--clear-groups',
      ...(c.chroot ? ['--bounding-set', '-all,+sys_chroot', '--inh-caps', '-all,+sys_chroot', '--ambient-caps', '+sys_chroot'] : ['--bounding-set', '-all', '--inh-caps', '-all']),
      '--no-new-privs', '--pdeathsig', 'KILL', '--',
    );
  }
  return out;
}

/** Run as root in QEMU's own mount namespace; $0 is QEMU's uid:gid. */
export const TUN_NODE_SCRIPT = 'mount -t tmpfs -o mode=0755,size=16k emberd-tun /dev/net && mknod -m 0600 /dev/net/tun c 10 200 && chown "$0" /dev/net/tun && exec "$@"';

/** QEMU's own argv words for the jail: chroot into `root` (relative to its cwd, the jail dir). */
export function jailQemuArgs(c: QemuConfinement): string[] {
  return c.chroot ? ['-chroot', 'root'] : [];
}

/**
 * Whether `uid`/`gid` (no supplementary groups) may read a file of this mode and owner: QEMU
 * reopens its inherited fds through /proc/self/fd, which checks the file's permissions again.
 */
export function canRead(st: { mode: number; uid: number; gid: number }, uid: number, gid: number): boolean {
  if (st.uid === uid) return (st.mode & 0o400) !== 0;
  if (st.gid === gid) return (st.mode & 0o040) !== 0;
  return (st.mode & 0o004) !== 0;
}

/** Throws BOOT_FAILED with what to do when QEMU's uid cannot read one of its boot files. */
export function checkReadableBy(files: string[], id: { uid: number; gid: number }): void {
  for (const f of files) {
    let st;
    try { st = statSync(f); } catch { continue; } // a missing file fails when emberd opens it, with its own words
    if (!canRead(st, id.uid, id.gid)) {
      throw new EmberdError('BOOT_FAILED', `QEMU runs as uid ${id.uid}:${id.gid}, which cannot read ${f} (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}:${st.gid}): make the images readable (chmod a+r), or pass --qemu-uid/--qemu-gid of a user that can read them`);
    }
  }
}
