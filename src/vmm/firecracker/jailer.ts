// Running Firecracker under its jailer: one chroot per VM, the boot files hard-linked into it, an
// unprivileged uid/gid, cgroup v2 limits where the controllers exist, a new PID namespace.
// Everything here that can be pure is (argv, paths, cgroup detection): the jailer needs root and
// KVM, so the tests pin these functions and docs/firecracker.md says what was not run for real.
//
// Facts this relies on (Firecracker v1.15.1, src/jailer/src/env.rs and cgroup.rs):
//  - the chroot is <chroot-base-dir>/<basename of --exec-file>/<id>/root; the jailer copies the
//    binary in, creates /dev/kvm, /dev/net/tun, /dev/urandom and /run (0700, owned by uid/gid),
//    and writes the Firecracker pid to /<exec name>.pid inside the chroot;
//  - --id: 1 to 64 characters, alphanumerics and '-';
//  - cgroup v2: the cgroup is <cgroup2 mount>/<parent-cgroup, default the exec name>/<id>; a
//    --cgroup file whose controller is not in the mount's cgroup.controllers is an error;
//  - --new-pid-ns: the jailer clone()s Firecracker into a new PID namespace, writes its pid file
//    and exits 0, so Firecracker is no longer the spawned process;
//  - the jailer forwards everything after `--` to Firecracker and adds `--id <id>` itself;
//  - it removes nothing: chroot and cgroup are the caller's to clean up;
//  - --netns PATH (a namespace handle such as /run/netns/NAME): the jailer opens it and
//    setns(CLONE_NEWNET) first thing in run(), before cgroups, chroot and exec, so Firecracker
//    and its TUNSETIFF on host_dev_name are in that netns; after pivoting into the chroot it
//    mknods /dev/net/tun (c 10 200, 0600, chowned to --uid/--gid) there, so the dropped uid can
//    open it and attach to a tap it owns (env.rs run(), mknod_and_own_dev; docs/jailer.md).
import { createHash } from 'node:crypto';
import { copyFileSync, constants as fsc, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MachineConfig } from '../backend.ts';
import { FirecrackerError } from './errors.ts';

export interface JailerOptions {
  /** jailer binary */
  binary: string;
  uid: number;
  gid: number;
  /** --chroot-base-dir; Firecracker's default is /srv/jailer */
  chrootBase: string;
  /** exec Firecracker into a new PID namespace (--new-pid-ns); default true */
  newPidNs?: boolean;
  /** --parent-cgroup (cgroup v2); default "emberd" */
  parentCgroup?: string;
}

/** Paths inside the chroot (what the API is told) and on the host (what emberd opens). */
export interface JailPath { inJail: string; host: string }

export interface JailLayout {
  id: string;
  execName: string;
  /** <base>/<exec name>/<id>: removed on destroy */
  jailDir: string;
  /** <jailDir>/root: the chroot */
  root: string;
  api: JailPath;
  vsock: JailPath;
  log: JailPath;
  kernel: JailPath;
  initramfs: JailPath;
  pack: JailPath;
  /** where the jailer writes the Firecracker pid */
  pidFile: string;
}

export interface CgroupV2Info {
  /** cgroup2 mount point, e.g. /sys/fs/cgroup */
  mount: string;
  controllers: Set<string>;
}

const JAIL_ID = /^[A-Za-z0-9-]{1,64}$/;

/**
 * The jail id for a sandbox: `e<8 hex of the run base>-sb-<20>`. The tag keeps two daemons with
 * different run dirs from reaping each other's jails; '_' is not allowed in a jailer id.
 */
export function jailIdFor(sandboxId: string, runBase: string): string {
  return `${jailTag(runBase)}-${sandboxId.replaceAll('_', '-')}`;
}

export function jailTag(runBase: string): string {
  return `e${createHash('sha256').update(runBase).digest('hex').slice(0, 8)}`;
}

export function jailLayout(o: JailerOptions, firecrackerBinary: string, id: string): JailLayout {
  if (!JAIL_ID.test(id)) throw new FirecrackerError('FIRECRACKER_JAILER', `jail id "${id}" is invalid: 1 to 64 letters, digits and '-'`);
  const execName = basename(firecrackerBinary);
  const jailDir = join(o.chrootBase, execName, id);
  const root = join(jailDir, 'root');
  const p = (inJail: string): JailPath => ({ inJail, host: join(root, inJail) });
  return {
    id,
    execName,
    jailDir,
    root,
    api: p('/run/firecracker.socket'),
    vsock: p('/firecracker.vsock'),
    log: p('/firecracker.log'),
    kernel: p('/vmlinux'),
    initramfs: p('/initramfs.cpio'),
    pack: p('/pack.sqfs'),
    pidFile: join(root, `${execName}.pid`),
  };
}

/** Longest host socket path a jail uses (Unix socket paths are limited to 107 bytes). */
export function checkJailPathLengths(layout: JailLayout): void {
  for (const s of [layout.api.host, `${layout.vsock.host}_1024`]) {
    if (Buffer.byteLength(s) > 107) {
      throw new FirecrackerError('FIRECRACKER_JAILER', `socket path ${s} is longer than 107 bytes; pass a shorter --jailer-base`);
    }
  }
}

/** cgroup v2 limits for one VM: only for controllers the hierarchy offers. */
export function cgroupLimits(machine: MachineConfig, cg: CgroupV2Info | undefined): string[] {
  if (!cg) return [];
  const out: string[] = [];
  // vCPU threads may use at most `vcpus` CPUs' worth of time (plus the VMM's own threads share it).
  if (cg.controllers.has('cpu')) out.push(`cpu.max=${machine.vcpus * 100_000} 100000`);
  // Guest RAM + Firecracker's own overhead (<= 5 MiB per the spec; 64 MiB of headroom for page
  // tables, virtio queues and the API thread).
  if (cg.controllers.has('memory')) out.push(`memory.max=${(machine.memoryMib + 64) * 1024 * 1024}`);
  // Firecracker runs a handful of threads (main/VMM, API, one per vCPU); no forks.
  if (cg.controllers.has('pids')) out.push('pids.max=64');
  return out;
}

/**
 * The jailer's argv (after the binary), ending in `-- <firecracker args>`; `netns`: the handle of
 * the network namespace Firecracker must run in (a sandbox with egress), passed as --netns.
 */
export function jailerArgs(o: JailerOptions, layout: JailLayout, firecrackerBinary: string, limits: string[], netns?: string): string[] {
  const args = [
    '--id', layout.id,
    '--exec-file', firecrackerBinary,
    '--uid', String(o.uid),
    '--gid', String(o.gid),
    '--chroot-base-dir', o.chrootBase,
  ];
  if (limits.length) {
    args.push('--cgroup-version', '2', '--parent-cgroup', o.parentCgroup ?? 'emberd');
    for (const l of limits) args.push('--cgroup', l);
  }
  if (netns) args.push('--netns', netns);
  if (o.newPidNs ?? true) args.push('--new-pid-ns');
  // Firecracker's built-in default seccomp filters stay on: no --no-seccomp, no --seccomp-filter.
  args.push('--', '--api-sock', layout.api.inJail);
  return args;
}

/** The cgroup directory the jailer creates for this VM (removed on destroy). */
export function cgroupDir(o: JailerOptions, layout: JailLayout, cg: CgroupV2Info | undefined, limits: string[]): string | undefined {
  return cg && limits.length ? join(cg.mount, o.parentCgroup ?? 'emberd', layout.id) : undefined;
}

/** Finds the cgroup v2 mount in /proc/mounts text and the controllers its root offers. */
export function detectCgroupV2(procMounts: string, readControllers: (mount: string) => string | undefined): CgroupV2Info | undefined {
  for (const line of procMounts.split('\n')) {
    const [, dir, type] = line.split(' ');
    if (type !== 'cgroup2' || !dir) continue;
    const text = readControllers(dir.replace(/\\040/g, ' '));
    return { mount: dir, controllers: new Set((text ?? '').trim().split(/\s+/).filter(Boolean)) };
  }
  return undefined;
}

export function hostCgroupV2(): CgroupV2Info | undefined {
  try {
    return detectCgroupV2(readFileSync('/proc/mounts', 'utf8'), (m) => {
      try { return readFileSync(join(m, 'cgroup.controllers'), 'utf8'); } catch { return undefined; }
    });
  } catch {
    return undefined;
  }
}

/**
 * Creates the chroot and links kernel, initramfs and pack into it. Hard links share the inode
 * (no copy, no chown: the images must be readable by the jail uid, which 0644 files are); across
 * filesystems a hard link is impossible, so the file is copied (reflinked where the filesystem can).
 * Returns how many files had to be copied.
 */
export function prepareJail(layout: JailLayout, files: { kernel: string; initramfs: string; pack: string }): number {
  rmSync(layout.jailDir, { recursive: true, force: true }); // a stale jail of the same id
  mkdirSync(layout.root, { recursive: true, mode: 0o755 });
  return linkIntoJail(layout, [
    { src: files.kernel, inJail: layout.kernel.inJail },
    { src: files.initramfs, inJail: layout.initramfs.inJail },
    { src: files.pack, inJail: layout.pack.inJail },
  ]);
}

/**
 * Hard-links files into an existing chroot at chroot-relative paths (a restored clone's snapshot
 * files, for instance), copying across filesystems. Returns how many had to be copied.
 */
export function linkIntoJail(layout: JailLayout, files: { src: string; inJail: string }[]): number {
  let copied = 0;
  for (const { src, inJail } of files) {
    const dst = join(layout.root, inJail);
    try {
      linkSync(src, dst);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EXDEV') {
        throw new FirecrackerError('FIRECRACKER_JAILER', `cannot link ${src} into the jail ${layout.root}: ${(e as Error).message}`, { cause: e });
      }
      copyFileSync(src, dst, fsc.COPYFILE_FICLONE);
      copied++;
    }
  }
  return copied;
}

/** Removes the chroot and the VM's cgroup (the cgroup only empties once its processes are reaped). */
export async function removeJail(layout: JailLayout, cgroup: string | undefined): Promise<void> {
  rmSync(layout.jailDir, { recursive: true, force: true });
  if (!cgroup) return;
  for (let i = 0; i < 50 && existsSync(cgroup); i++) {
    try { rmdirSync(cgroup); } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw e;
      await sleep(20);
    }
  }
}

/** Reads the pid the jailer wrote; undefined until the file is complete. */
export function readJailPid(layout: JailLayout): number | undefined {
  try {
    const n = Number(readFileSync(layout.pidFile, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A jailed Firecracker outlives a SIGKILLed daemon (the jailer's setuid clears PR_SET_PDEATHSIG,
 * and with --new-pid-ns it is not even our child). So at the first boot after a start, emberd
 * kills the jails carrying its tag that a predecessor left, and removes their chroots and cgroups.
 * The pid is only killed if its command line names the jail id (a recycled pid is left alone).
 */
export async function reapStaleJails(o: JailerOptions, execName: string, tag: string, cg: CgroupV2Info | undefined, log?: (m: string) => void): Promise<number> {
  const dir = join(o.chrootBase, execName);
  let names: string[];
  try { names = readdirSync(dir); } catch { return 0; }
  const mine = new RegExp(`^${tag}-sb-[a-z0-9]{20}$`);
  let reaped = 0;
  for (const id of names.filter((n) => mine.test(n))) {
    const layout = jailLayout(o, join('/', execName), id);
    const pid = readJailPid(layout);
    if (pid && processHasArgs(pid, ['--id', id])) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(20);
      log?.(`killed Firecracker pid ${pid} of stale jail ${id}`);
    }
    await removeJail(layout, cg ? join(cg.mount, o.parentCgroup ?? 'emberd', id) : undefined).catch(() => {});
    reaped++;
  }
  return reaped;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // a zombie still answers kill(0); its state in /proc says so
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** True when /proc/<pid>/cmdline contains `args` as consecutive arguments. */
export function processHasArgs(pid: number, args: string[]): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((_, i) => args.every((a, j) => argv[i + j] === a));
  } catch {
    return false;
  }
}
