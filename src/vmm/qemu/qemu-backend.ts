// The QEMU backend: `qemu-system-x86_64 -M microvm`, KVM when usable, else software emulation
// (TCG), each QEMU confined as far as the host allows (confinement.ts decides, jail.ts lays it
// out, migration.ts moves snapshots in and out without QEMU starting anything).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, closeSync, existsSync, ftruncateSync, mkdirSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import type { Socket } from 'node:net';
import type { Backend, BackendInfo, BootSpec, RestorePath, SaveOptions, SnapshotSupport, VmHandle } from '../backend.ts';
import { connectUnix } from '../../agent/connect.ts';
import { EmberdError, isEmberdError } from '../../errors.ts';
import { hostTscKhz, probeKvm } from '../host.ts';
import { onlyChildOf, SETPRIV, spawnVmm } from '../vmm-process.ts';
import { createVmCgroup, isStaleCgroup, probeCgroups, reapEmptyCgroups, removeVmCgroup, type VmCgroup } from '../confine/cgroup-v2.ts';
import { vmLimits } from '../confine/vm-limits.ts';
import { netnsPath, NSENTER } from '../netns.ts';
import { QmpClient } from './qmp.ts';
import { qemuArgs, type QemuOptions } from './cmdline.ts';
import { planConfinement, type QemuConfineOptions, type QemuConfinement } from './confinement.ts';
import { BOOT_FILE_FDS, checkReadableBy, INCOMING_FD, MEMORY_FD, jailLayout, jailQemuArgs, prepareJail, removeJail, wrapperArgv, type WrapperTools } from './jail.ts';
import { decompressInto, migrateToFile, type StreamSource } from './migration.ts';
import { describeExit, QemuVm } from './qemu-vm.ts';
import { checkUnit, removeUnit, sharedPaths, unitDiskBytes, writeUnitRecord, type SharedUnit } from './shared-memory.ts';

/** What a restoring QEMU loads: a stream file, and for a shared-memory clone the RAM file it maps. */
interface Incoming {
  file: string;
  /** -incoming defer: capabilities are set over QMP before migrate-incoming (7.2 has no -global for x-ignore-shared) */
  defer?: boolean;
  memory?: { file: string; share: boolean };
}

export interface QemuBackendOptions {
  binary?: string;
  accel?: 'kvm' | 'tcg' | 'auto';
  /** --qemu-confine, --qemu-uid, --qemu-gid */
  confine?: QemuConfineOptions;
  /**
   * --shared-memory: restore clones from the golden's RAM file (on), from the whole stream (off),
   * or (auto, the default) shared only where it weakens nothing: QEMU can open the file read-only
   * (8.2+), or QEMU runs as emberd's own uid (which could write the snapshots anyway).
   */
  sharedMemory?: 'auto' | 'on' | 'off';
}

export function findQemu(binary?: string): string {
  const candidates = binary ? [binary] : ['/usr/bin/qemu-system-x86_64', '/usr/local/bin/qemu-system-x86_64'];
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    throw new EmberdError('BOOT_FAILED', `QEMU was not found (looked for ${candidates.join(', ')}); install it with \`apt-get install qemu-system-x86\` or pass --qemu PATH`);
  }
  return found;
}

const UNSHARE = ['/usr/bin/unshare', '/bin/unshare'].find((p) => existsSync(p));

/** Whether a non-root emberd can give QEMU its own user, pid, net and ipc namespaces. */
function usernsWorks(): boolean {
  try {
    execFileSync(UNSHARE!, ['--user', '--map-current-user', '--pid', '--net', '--ipc', '--fork', '--kill-child', '--', 'true'], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

/** Numbers every start: each gets a jail dir, and so socket paths, of its own (jail.ts). */
let starts = 0;
/** Numbers every shared-unit build: its temporary dir and its run dir beside the sandboxes' (`m<n>`). */
let builds = 0;

/** Per run base (one daemon's): the predecessor's empty cgroups are removed before the first VM. */
const reaped = new Map<string, true>();

export class QemuBackend implements Backend {
  readonly name = 'qemu' as const;
  readonly network = true;
  readonly info: BackendInfo;
  /** What confines each QEMU here; for GET / (in info) and the tests. */
  readonly confinement: QemuConfinement;
  private readonly binary: string;
  private readonly opts: QemuOptions;
  private readonly tools: WrapperTools;
  /** Whether a clone can open the shared RAM file read-only (QEMU 8.2+); else QEMU's uid must be able to write it. */
  private readonly readOnlyRamFile: boolean;
  /** Whether restores use the shared-memory unit (QemuBackendOptions.sharedMemory). */
  readonly useShared: boolean;

  constructor(o: QemuBackendOptions = {}) {
    this.binary = findQemu(o.binary);
    const kvm = probeKvm();
    const accel = o.accel && o.accel !== 'auto' ? o.accel : kvm.usable ? 'kvm' : 'tcg';
    // spawn=deny: QEMU never forks or execs; snapshots go over a socket and an fd (migration.ts).
    this.opts = { accel, tscKhz: accel === 'tcg' ? hostTscKhz() : undefined, denySpawn: true };
    const isRoot = process.getuid?.() === 0;
    this.confinement = planConfinement(o.confine ?? {}, {
      isRoot,
      uid: process.getuid?.() ?? -1,
      setpriv: SETPRIV,
      unshare: UNSHARE,
      usernsWorks,
      cgroups: probeCgroups(isRoot),
    });
    this.tools = { setpriv: SETPRIV ?? 'setpriv', unshare: UNSHARE ?? 'unshare', sh: '/bin/sh', nsenter: NSENTER ?? 'nsenter' };
    // QEMU 8.2 added `rom` to memory-backend-file: readonly=on,rom=off maps a read-only file as writable private RAM.
    this.readOnlyRamFile = /\brom=/.test(execFileSync(this.binary, ['-object', 'memory-backend-file,help'], { encoding: 'utf8' }));
    const version = (/version ([\d.]+)/.exec(execFileSync(this.binary, ['--version'], { encoding: 'utf8' }))?.[1]) ?? 'unknown';
    // Before 8.2 a clone's QEMU opens the RAM file read-write: one dropped to another uid would
    // then own a file every clone of the golden maps (docs/security.md).
    this.useShared = o.sharedMemory === 'on' || (o.sharedMemory !== 'off' && (this.readOnlyRamFile || !this.confinement.drop));
    this.snapshots = {
      fingerprint: `qemu ${version} ${accel} ${SNAPSHOT_FORMAT}`,
      keepsConnections: true,
      save: (vm, dir, o) => this.save(vm as QemuVm, dir, o),
      restore: (spec, dir) => this.restore(spec, dir),
      ...(this.useShared ? {
        sharedMemoryFile: (dir: string) => sharedPaths(dir).memory,
        prepareShared: (spec: BootSpec, dir: string) => this.prepareShared(spec, dir),
      } : {}),
    };
    this.info = {
      name: 'qemu',
      binary: this.binary,
      version,
      accel,
      reason: `${o.accel && o.accel !== 'auto' ? `acceleration forced to ${accel}` : kvm.reason}; QEMU confinement: ${this.confinement.summary}`,
      warnings: [
        ...(accel === 'tcg' ? ['KVM is not usable here, so VMs run under software emulation (TCG): boots take seconds and code runs several times slower than on KVM.'] : []),
        ...this.confinement.warnings,
      ],
    };
  }

  readonly snapshots: SnapshotSupport;

  boot(spec: BootSpec): Promise<VmHandle> {
    return this.launch(spec);
  }

  /**
   * Snapshot: QMP stop, then `migrate` the whole state to a socket emberd listens on in QEMU's
   * jail, through zstd into a file. The control connection stays open: the guest agent is idle,
   * and a clone simply sees a host connect again. The VM is ended afterwards (or, keepRunning,
   * continued: `cont` from postmigrate); then the shared-memory unit is built from that stream
   * (buildShared), so the saved VM itself is never resumed from the file clones map.
   */
  private async save(vm: QemuVm, dir: string, o: SaveOptions = {}): Promise<{ bytes: number }> {
    if (!vm.qmp) throw new EmberdError('INTERNAL', 'cannot snapshot a VM without its QMP connection');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, STATE_FILE);
    await vm.qmp.execute('stop');
    try {
      await o.onStopped?.();
      await migrateToFile(vm.qmp, vm.layout.migrate, this.confinement.drop, file);
    } catch (e) {
      // The VM goes on as if nothing happened (a failed pause leaves the sandbox running).
      await vm.qmp.execute('cont').catch(() => {});
      throw e;
    }
    if (o.keepRunning) await vm.qmp.execute('cont');
    else await vm.stop(0);
    const bytes = statSync(file).size;
    // Without the unit every restore still works (from the stream), so a failure here is not the save's.
    if (this.useShared && o.shared !== false) await this.prepareShared({ ...vm.spec, deadline: Date.now() + SHARED_BUILD_TIMEOUT_MS }, dir);
    const unit = checkUnit(dir, vm.spec.machine.memoryMib);
    return { bytes: bytes + ('unit' in unit ? unitDiskBytes(unit.unit) : 0) };
  }

  /**
   * Restore: the shared-memory path when the snapshot's unit is whole (shared-memory.ts), else,
   * or when that start fails, the whole stream; a missing or broken unit is rebuilt in the
   * background meanwhile. Either way the same machine, then QMP `cont`.
   */
  private async restore(spec: BootSpec, dir: string): Promise<VmHandle> {
    const file = join(dir, STATE_FILE);
    if (!existsSync(file)) throw new EmberdError('BOOT_FAILED', `snapshot ${file} does not exist`);
    const checked = this.useShared ? checkUnit(dir, spec.machine.memoryMib) : { why: 'shared memory is off (--shared-memory)', missing: true as const };
    if ('unit' in checked) {
      try {
        return await this.resume(spec, { file: checked.unit.stream, defer: true, memory: { file: checked.unit.memory, share: false } }, 'shared-memory');
      } catch (e) {
        if (Date.now() > spec.deadline) throw e;
        this.sharedProblems.set(dir, `the shared-memory restore failed: ${(e as Error).message}`);
        removeUnit(dir);
      }
    } else {
      this.sharedProblems.set(dir, checked.why);
      if (!checked.missing) removeUnit(dir);
    }
    const vm = await this.resume(spec, { file }, 'stream');
    // Only from a stream that just loaded: a broken one is the launcher's to replace (a new golden).
    if (this.useShared) void this.prepareShared({ ...spec, deadline: Date.now() + SHARED_BUILD_TIMEOUT_MS }, dir);
    return vm;
  }

  /** Why the last restore from `dir` could not use shared memory (for logs and tests). */
  readonly sharedProblems = new Map<string, string>();
  private readonly building = new Map<string, Promise<void>>();

  private prepareShared(spec: BootSpec, dir: string): Promise<void> {
    if ('unit' in checkUnit(dir, spec.machine.memoryMib)) return Promise.resolve();
    let p = this.building.get(dir);
    if (!p) {
      p = this.buildShared(spec, dir)
        .then(() => { this.sharedProblems.delete(dir); }, (e) => { this.sharedProblems.set(dir, `building the shared-memory unit failed: ${(e as Error).message}`); })
        .finally(() => this.building.delete(dir));
      this.building.set(dir, p);
    }
    return p;
  }

  /**
   * The shared-memory unit, from the snapshot's stream: a QEMU whose RAM is a fresh file mapped
   * shared loads the whole stream (so the pages land in the file), stays paused (it is never
   * resumed: the file must stay exactly what the small stream describes), and migrates again with
   * x-ignore-shared, which leaves the RAM out. Written into a temporary dir, renamed into place.
   */
  private async buildShared(spec: BootSpec, dir: string): Promise<void> {
    const k = builds++; // taken before any await: concurrent builds never share a run dir
    const tmp = sharedPaths(dir, `shared.tmp-${process.pid}-${k}`);
    const runDir = join(dirname(spec.runDir), `m${(k % 36 ** 3).toString(36)}`);
    const s: BootSpec = { ...spec, id: `${spec.id}-mem`.slice(0, 60), runDir };
    try {
      mkdirSync(tmp.dir, { mode: 0o700 }); // not recursive: a snapshot removed meanwhile stays removed
      const fd = openSync(tmp.memory, 'w', 0o600);
      try { ftruncateSync(fd, spec.machine.memoryMib * 1048576); } finally { closeSync(fd); }
      const vm = await this.resume(s, { file: join(dir, STATE_FILE), memory: { file: tmp.memory, share: true } }, 'stream', false);
      try {
        await vm.qmp!.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
        await migrateToFile(vm.qmp!, vm.layout.migrate, this.confinement.drop, tmp.stream);
      } finally {
        await vm.stop(0);
      }
      writeUnitRecord(tmp);
      removeUnit(dir);
      renameSync(tmp.dir, sharedPaths(dir).dir);
    } finally {
      rmSync(tmp.dir, { recursive: true, force: true });
      rmSync(runDir, { recursive: true, force: true });
    }
  }

  /**
   * Starts QEMU restoring from `incoming`, waits until the state is loaded, then `cont` (unless
   * `run` is false: the VM stays paused, for buildShared).
   */
  private async resume(spec: BootSpec, incoming: Incoming, path: RestorePath, run = true): Promise<QemuVm> {
    const vm = await this.launch(spec, incoming);
    const file = incoming.file;
    try {
      if (incoming.defer) {
        await vm.qmp!.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
        await vm.qmp!.execute('migrate-incoming', { uri: `fd:${INCOMING_FD}` });
      }
      for (;;) {
        const s = (await vm.qmp!.execute('query-status')) as { status: string };
        if (s.status === 'paused' || s.status === 'postmigrate') break;
        if (s.status !== 'inmigrate') throw new EmberdError('BOOT_FAILED', `restoring ${file} left the VM ${s.status}`);
        if (Date.now() > spec.deadline) throw new EmberdError('BOOT_TIMEOUT', `restoring ${file} did not finish before the deadline`);
        await delay(5);
      }
      if (run) await vm.qmp!.execute('cont');
      vm.restoredFrom = path;
      return vm;
    } catch (e) {
      await vm.stop(0);
      throw e instanceof EmberdError ? e : new EmberdError('BOOT_FAILED', `restoring ${file} failed: ${(e as Error).message}; ${vm.consoleTail(1000)}`);
    }
  }

  private async launch(spec: BootSpec, incoming?: Incoming): Promise<QemuVm> {
    const incomingFile = incoming?.file;
    const c = this.confinement;
    const bootFiles = [spec.kernel, spec.initramfs, spec.packImage];
    if (c.drop) checkReadableBy(bootFiles, c.drop);
    mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
    const fds = openBootFiles(bootFiles);
    // QEMU before 8.2 opens a RAM file read-write even for a private mapping, so QEMU's uid must
    // be able to (docs/snapshots.md "Shared memory": what that means for confinement); 8.2+ gets
    // a clone's file read-only. The file is passed as fd 7: QEMU's uid need not reach its path.
    const readOnlyFile = !!incoming?.memory && !incoming.memory.share && this.readOnlyRamFile;
    if (incoming?.memory) {
      try {
        if (c.drop && !readOnlyFile) { chownSync(incoming.memory.file, c.drop.uid, c.drop.gid); chmodSync(incoming.memory.file, 0o600); }
        if (c.drop && readOnlyFile) { chownSync(incoming.memory.file, process.getuid?.() ?? 0, process.getgid?.() ?? 0); chmodSync(incoming.memory.file, 0o644); }
        fds.push(openSync(incoming.memory.file, readOnlyFile ? 'r' : 'r+'));
      } catch (e) {
        for (const fd of fds) closeSync(fd);
        throw new EmberdError('BOOT_FAILED', `cannot open the shared memory file ${incoming.memory.file}: ${(e as Error).message}`);
      }
    }
    const layout = jailLayout(spec.runDir, c.chroot, starts++);
    let cgroup: VmCgroup | undefined;
    let spawned = false;
    try {
      prepareJail(layout, c);
      if (c.cgroups) {
        const runBase = dirname(spec.runDir);
        const prefix = `qemu-${tagOf(runBase)}-`;
        if (!reaped.has(runBase)) { reaped.set(runBase, true); reapEmptyCgroups(c.cgroups, (name, ageMs) => isStaleCgroup(name, ageMs, prefix, 'qemu-')); }
        const limits = vmLimits({ machine: spec.machine, accel: this.opts.accel, hostMemBytes: totalmem() });
        cgroup = await createVmCgroup(c.cgroups, `${prefix}${spec.id.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64)}`, limits);
      }
      const args = [
        ...qemuArgs(spec, {
          controlSocket: layout.control.qemu,
          qmpSocket: layout.qmp.qemu,
          kernel: `/proc/self/fd/${BOOT_FILE_FDS.kernel}`,
          initramfs: `/proc/self/fd/${BOOT_FILE_FDS.initramfs}`,
          pack: `/proc/self/fd/${BOOT_FILE_FDS.pack}`,
          memory: incoming?.memory ? { path: `/proc/self/fd/${MEMORY_FD}`, share: incoming.memory.share, readOnlyFile } : undefined,
        }, this.opts),
        ...jailQemuArgs(c),
        ...(incoming ? ['-incoming', incoming.defer ? 'defer' : `fd:${INCOMING_FD}`] : []),
      ];
      const proc = spawnVmm(this.binary, args, {
        cwd: layout.dir,
        wrap: wrapperArgv(c, this.tools, cgroup?.procs, spec.network ? netnsPath(spec.network) : undefined),
        extraFds: [...fds.slice(0, 3), ...(incoming ? ['pipe' as const] : []), ...fds.slice(3)],
      });
      spawned = true;
      const source: StreamSource | undefined = incomingFile ? decompressInto((proc.child.stdio as unknown as Socket[])[INCOMING_FD]!, incomingFile) : undefined;
      const vm = new QemuVm(spec, proc, layout, cgroup, source);
      const died = proc.exited.then((e) => {
        throw new EmberdError('BOOT_FAILED', `QEMU exited during start (${describeExit(e.code, e.signal)}): ${proc.console.tail(2000).trim()}`);
      });
      died.catch(() => {});
      try {
        if (c.namespaces) vm.setQemuPid(await Promise.race([forkedPid(proc.pid, spec.deadline, () => proc.isRunning()), died]));
        // QEMU greets on QMP only once the machine is built (kernel and disks loaded), so a
        // greeting means a bad kernel or image can no longer make this boot fail silently.
        // A connect that is still retrying when QEMU dies goes on until the deadline; whatever it
        // gets later is closed (its path is this start's alone, so it normally gets nothing).
        const qmpSocket = connectUnix(layout.qmp.host, spec.deadline);
        closeIfLate(qmpSocket, vm);
        vm.qmp = await Promise.race([qmpSocket.then((s) => QmpClient.attach(s, Math.max(1000, spec.deadline - Date.now()))), died]);
        const control = connectUnix(layout.control.host, spec.deadline);
        closeIfLate(control, vm);
        vm.attach(await Promise.race([control, died]));
        return vm;
      } catch (e) {
        await vm.stop(0);
        if (isEmberdError(e, 'BOOT_FAILED') || isEmberdError(e, 'BOOT_TIMEOUT')) throw e;
        // e.g. the QMP connection closing first when QEMU dies at start: the cause is in the console.
        throw new EmberdError('BOOT_FAILED', `QEMU did not start (${(e as Error).message}): ${proc.console.tail(2000).trim()}`);
      }
    } catch (e) {
      if (!spawned) {
        removeJail(layout);
        if (cgroup) await removeVmCgroup(cgroup.dir).catch(() => {});
      }
      throw e;
    } finally {
      for (const fd of fds) closeSync(fd);
    }
  }
}

/** Bumped whenever what save() writes changes meaning. */
const SNAPSHOT_FORMAT = 'migrate-zstd-1+shared-1';
/** Loading a whole stream into a file-backed VM and saving it again without RAM. */
const SHARED_BUILD_TIMEOUT_MS = 120_000;
const STATE_FILE = 'state.zst';

/** Opens kernel, initramfs and pack for QEMU to inherit; a missing one is a BOOT_FAILED that names it. */
function openBootFiles(files: string[]): number[] {
  const fds: number[] = [];
  try {
    for (const f of files) fds.push(openSync(f, 'r'));
    return fds;
  } catch (e) {
    for (const fd of fds) closeSync(fd);
    throw new EmberdError('BOOT_FAILED', `cannot open ${(e as NodeJS.ErrnoException).path ?? 'a boot file'}: ${(e as Error).message}`);
  }
}

/** 8 hex of the run base: names a daemon's cgroups, so a restart removes only its predecessor's. */
function tagOf(runBase: string): string {
  return createHash('sha256').update(runBase).digest('hex').slice(0, 8);
}

/** Closes the socket `connecting` yields if the VM has ended by then. */
function closeIfLate(connecting: Promise<Socket>, vm: QemuVm): void {
  let ended = false;
  vm.exited.then(() => { ended = true; }, () => {});
  connecting.then((s) => { if (ended) s.destroy(); }, () => {});
}

/** QEMU's pid under `unshare --fork`: the wrapper's only child, which appears right after the fork. */
async function forkedPid(wrapper: number, deadline: number, running: () => boolean): Promise<number> {
  for (;;) {
    const pid = onlyChildOf(wrapper);
    if (pid) return pid;
    if (!running()) throw new EmberdError('BOOT_FAILED', 'the QEMU wrapper exited before starting QEMU');
    if (Date.now() > deadline) throw new EmberdError('BOOT_TIMEOUT', 'QEMU was not started before the deadline');
    await delay(2);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
