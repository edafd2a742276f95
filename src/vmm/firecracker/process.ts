// One Firecracker process per VM: where its files go (for emberd on the host, and as Firecracker
// is told them), spawning it directly (`--api-sock` in the VM's run dir, PDEATHSIG through
// vmm-process.ts) or under the jailer (a chroot per VM), and removing everything it leaves on the
// host once it has exited (Firecracker itself removes none of its sockets, on any exit).
import { chownSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BootSpec } from '../backend.ts';
import type { ConsoleBuffer } from '../console-buffer.ts';
import { netnsPath, nsenterArgv } from '../netns.ts';
import { spawnVmm, type VmmProcess } from '../vmm-process.ts';
import { firecrackerInstanceId, SNAPSHOT_FILES, type FcGuestPaths, type FcSnapshotPaths } from './boot-config.ts';
import { FirecrackerError, isFirecrackerError } from './errors.ts';
import {
  cgroupDir, cgroupLimits, checkJailPathLengths, jailerArgs, jailIdFor, jailLayout, linkIntoJail, prepareJail, readJailPid, removeJail,
  type CgroupV2Info, type JailerOptions, type JailLayout,
} from './jailer.ts';

/** The vsock UDS, relative to a non-jailed Firecracker's working directory (the VM's run dir). */
const VSOCK_UDS_NAME = 'firecracker.vsock';

/** What emberd opens on the host. */
export interface FcHostPaths { api: string; vsock: string; log?: string; metrics?: string }

/** Where one VM's things are: for emberd (host) and for Firecracker (guest: chroot-relative if jailed). */
export interface FcPlacement {
  host: FcHostPaths;
  guest: FcGuestPaths;
  /** the VM's jail, when jailed */
  layout?: JailLayout;
  /** a clone's snapshot: its directory, and its files as the load request names them */
  snapshot?: { dir: string; load: FcSnapshotPaths };
}

export interface PlaceOptions {
  /** the firecracker binary */
  binary: string;
  jailer?: JailerOptions;
  logFiles?: boolean;
}

/** Lays out one VM (a cold boot, or given `snapDir` a clone of that snapshot); throws for a jail whose socket paths are too long. */
export function placeVm(spec: BootSpec, o: PlaceOptions, snapDir?: string): FcPlacement {
  if (o.jailer) {
    const layout = jailLayout(o.jailer, o.binary, jailIdFor(spec.id, dirname(spec.runDir)));
    checkJailPathLengths(layout);
    const place: FcPlacement = {
      layout,
      host: { api: layout.api.host, vsock: layout.vsock.host },
      guest: { kernel: layout.kernel.inJail, initramfs: layout.initramfs.inJail, pack: layout.pack.inJail, vsockUds: layout.vsock.inJail },
    };
    if (o.logFiles) { place.host.log = layout.log.host; place.guest.logFile = layout.log.inJail; }
    if (snapDir) place.snapshot = { dir: snapDir, load: { snapshotPath: `/${SNAPSHOT_FILES.state}`, memFilePath: `/${SNAPSHOT_FILES.memory}` } };
    return place;
  }
  const place: FcPlacement = {
    host: { api: join(spec.runDir, 'firecracker.sock'), vsock: join(spec.runDir, VSOCK_UDS_NAME) },
    // The vsock UDS path is relative on purpose: Firecracker binds it against its working
    // directory (this VM's run dir), and a snapshot records it verbatim, so each clone of a
    // snapshot binds a socket of its own, even on 1.15 which has no vsock_override.
    guest: { kernel: spec.kernel, initramfs: spec.initramfs, pack: spec.packImage, vsockUds: VSOCK_UDS_NAME },
  };
  if (o.logFiles) {
    place.host.log = join(spec.runDir, 'firecracker.log');
    place.host.metrics = join(spec.runDir, 'firecracker.metrics');
    place.guest.logFile = place.host.log;
    place.guest.metricsFile = place.host.metrics;
  }
  if (snapDir) place.snapshot = { dir: snapDir, load: { snapshotPath: join(snapDir, SNAPSHOT_FILES.state), memFilePath: join(snapDir, SNAPSHOT_FILES.memory) } };
  return place;
}

/** The Firecracker process as the VM handle sees it, whether spawned directly or by the jailer. */
export interface FcProcess {
  pid: number;
  console: ConsoleBuffer;
  /** `statusKnown` false: it ran in the jailer's PID namespace, so its status is not visible */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; statusKnown: boolean }>;
  isRunning(): boolean;
  kill(signal: NodeJS.Signals): void;
}

/** A started Firecracker and what it holds on the host. */
export interface FcInstance {
  proc: FcProcess;
  place: FcPlacement;
  /** files, sockets and directories it holds (VmResources.paths) */
  paths: string[];
  /** Removes every socket and file of the VM, and its jail and cgroup; once the process has exited. */
  cleanUp(): Promise<void>;
}

export interface LaunchOptions extends PlaceOptions {
  /** the host's cgroup v2 hierarchy, for a jailed VM's limits */
  cgroup?: CgroupV2Info;
  /** nsenter binary for a non-jailed VM with a network (default: found on the host) */
  nsenter?: string;
  log?: (msg: string) => void;
}

/** Spawns Firecracker for `place` (stale sockets removed first); throws FIRECRACKER_JAILER (or the jail's own error), leaving nothing. */
export async function launchFirecracker(spec: BootSpec, place: FcPlacement, o: LaunchOptions): Promise<FcInstance> {
  const { host, layout } = place;
  // Firecracker never unlinks its sockets and refuses to bind over an existing one.
  removeStaleSockets(host);
  let cgDir: string | undefined;
  let proc: FcProcess;
  try {
    if (o.jailer && layout) {
      const jail = o.jailer;
      let copied = prepareJail(layout, { kernel: spec.kernel, initramfs: spec.initramfs, pack: spec.packImage });
      // A clone's own chroot gets the snapshot's files (hard links: the memory file is mapped
      // MAP_PRIVATE, never written), at the chroot-relative paths the load request names.
      const snap = place.snapshot;
      if (snap) copied += linkIntoJail(layout, [SNAPSHOT_FILES.state, SNAPSHOT_FILES.memory].map((f) => ({ src: join(snap.dir, f), inJail: `/${f}` })));
      if (copied) o.log?.(`${spec.id}: ${copied} file(s) copied into the jail (the images or snapshots are on another filesystem than ${jail.chrootBase}; put them on the same one to hard-link instead)`);
      if (host.log) { writeFileSync(host.log, ''); chownSync(host.log, jail.uid, jail.gid); }
      const limits = cgroupLimits(spec.machine, o.cgroup);
      cgDir = cgroupDir(jail, layout, o.cgroup, limits);
      proc = await startJailed(spawnVmm(jail.binary, jailerArgs(jail, layout, o.binary, limits, spec.network && netnsPath(spec.network))), layout, jail.newPidNs ?? true, spec.deadline);
    } else {
      for (const f of [host.log, host.metrics]) if (f) writeFileSync(f, '');
      const c = directCommand(spec, host, o.nsenter);
      proc = directProcess(spawnVmm(o.binary, c.args, { cwd: spec.runDir, wrap: c.wrap }));
    }
  } catch (e) {
    if (layout) await removeJail(layout, cgDir).catch(() => {});
    throw isFirecrackerError(e) ? e : new FirecrackerError('FIRECRACKER_JAILER', `could not start the jailer: ${(e as Error).message}`, { cause: e });
  }
  return {
    proc,
    place,
    paths: layout ? [layout.jailDir, ...(cgDir ? [cgDir] : [])] : [host.api, host.vsock, ...(host.log ? [host.log] : []), ...(host.metrics ? [host.metrics] : [])],
    cleanUp: async () => {
      removeStaleSockets(host);
      for (const f of [host.log, host.metrics]) if (f) rmSync(f, { force: true });
      if (layout) await removeJail(layout, cgDir).catch(() => {});
    },
  };
}

/**
 * A non-jailed Firecracker's argv, and for a sandbox with a network the wrapper that puts it in
 * the sandbox's netns (the one QEMU uses: nsenter execs Firecracker in place, so PDEATHSIG and
 * the pid hold). It runs as emberd's uid then, root (egress needs root), which may open the tap.
 */
export function directCommand(spec: Pick<BootSpec, 'id' | 'network'>, host: Pick<FcHostPaths, 'api'>, nsenter?: string): { args: string[]; wrap?: string[] } {
  const args = ['--api-sock', host.api, '--id', firecrackerInstanceId(spec.id)];
  return spec.network ? { args, wrap: nsenterArgv(netnsPath(spec.network), nsenter) } : { args };
}

/** The end of Firecracker's log file, for an error message ('' without one). */
export function logTail(file: string | undefined): string {
  if (!file) return '';
  try {
    const t = readFileSync(file, 'utf8').trim();
    return t ? `; Firecracker log: ${t.slice(-1500)}` : '';
  } catch {
    return '';
  }
}

/** The API and vsock sockets, and the per-port `<vsock>_<port>` ones Firecracker binds next to it. */
function removeStaleSockets(host: { api: string; vsock: string }): void {
  rmSync(host.api, { force: true });
  rmSync(host.vsock, { force: true });
  const dir = dirname(host.vsock);
  const base = host.vsock.slice(dir.length + 1);
  try {
    for (const n of readdirSync(dir)) if (n.startsWith(`${base}_`)) rmSync(join(dir, n), { force: true });
  } catch { /* no dir yet */ }
}

function directProcess(p: VmmProcess): FcProcess {
  return {
    pid: p.pid,
    console: p.console,
    exited: p.exited.then((e) => ({ ...e, statusKnown: true })),
    isRunning: () => p.isRunning(),
    kill: (s) => { if (p.isRunning()) p.child.kill(s); },
  };
}

/**
 * Under the jailer without --new-pid-ns the jailer execs Firecracker in place: same process.
 * With --new-pid-ns the jailer clones Firecracker and exits 0 after writing its pid file; the
 * Firecracker process keeps the jailer's stdout/stderr pipes, so their closing is its exit (its
 * status is not visible: it is not our child).
 */
async function startJailed(p: VmmProcess, layout: JailLayout, newPidNs: boolean, deadline: number): Promise<FcProcess> {
  if (!newPidNs) return directProcess(p);
  let jailerExit: number | null | undefined;
  p.child.once('exit', (code) => { jailerExit = code; });
  let pid: number | undefined;
  while (!(pid = readJailPid(layout))) {
    if (jailerExit !== undefined && jailerExit !== 0) {
      await p.exited;
      throw new FirecrackerError('FIRECRACKER_JAILER', `the jailer exited with code ${jailerExit}: ${p.console.tail(1500).trim()}`);
    }
    if (Date.now() > deadline || (jailerExit === 0 && !readJailPid(layout))) {
      p.child.kill('SIGKILL');
      throw new FirecrackerError('FIRECRACKER_JAILER', `the jailer did not write ${layout.pidFile}${jailerExit === 0 ? ' before exiting' : ' before the boot deadline'}: ${p.console.tail(1500).trim()}`);
    }
    await sleep(10);
  }
  const fcPid = pid;
  return {
    pid: fcPid,
    console: p.console,
    exited: p.exited.then(() => ({ code: null, signal: null, statusKnown: false })),
    isRunning: () => p.isRunning(),
    kill: (s) => { if (p.isRunning()) { try { process.kill(fcPid, s); } catch { /* gone */ } } },
  };
}
