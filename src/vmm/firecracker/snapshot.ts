// Golden snapshots through Firecracker's API (docs/firecracker.md "Snapshots").
// save(): PATCH /vm Paused -> PUT /snapshot/create Full -> SIGKILL -> write emberd's record.
// restore(): the record checked against this binary and configuration (before any process) -> a
// fresh process -> GET /version -> [logger/metrics] -> PUT /snapshot/load (resume_vm) -> CONNECT
// 1024 again. How each clone gets a vsock socket of its own: docs/firecracker.md "Snapshots".
import { createHash } from 'node:crypto';
import { constants as fsc, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join, resolve } from 'node:path';
import type { BootSpec, SaveOptions, SnapshotSupport, VmHandle } from '../backend.ts';
import { RESUME_VM, restoreRequests, saveRequests, SNAPSHOT_FILES, type FcSnapshotPaths } from './boot-config.ts';
import { FirecrackerError, isFirecrackerError } from './errors.ts';
import type { JailerOptions } from './jailer.ts';
import { probeSnapshotFormat, type FirecrackerProbe } from './probe.ts';
import type { Configure } from './start.ts';
import { supportsVsockOverride } from './version.ts';
import { FirecrackerVm } from './vm.ts';

/** What save() writes and restore() expects; bump when that changes meaning (it is part of the key). */
const SNAPSHOT_LAYOUT = 'emberd-firecracker-snapshot/1';

/** Writing the guest memory: a disk write for Firecracker, a migration under TCG for the double. */
const SNAPSHOT_CREATE_TIMEOUT_MS = 120_000;

/** SNAPSHOT_FILES.meta: what the snapshot was made with, checked before a load is attempted. */
interface SnapshotMeta {
  format: string;
  firecracker_version: string;
  /** `firecracker --snapshot-version` of the binary that wrote it */
  snapshot_format: string;
  jailed: boolean;
  /** the vsock uds_path the state records (relative to the run dir, or chroot-relative) */
  vsock_uds_path: string;
  created: string;
}

export interface SnapshotOptions {
  probe: FirecrackerProbe;
  /** BackendInfo.accel: KVM or the double */
  accel: string;
  jailer?: JailerOptions;
  /** the backend's start sequence, for a clone of the snapshot in `snapDir` */
  start(spec: BootSpec, configure: Configure, snapDir: string): Promise<FirecrackerVm>;
}

export class FirecrackerSnapshots implements SnapshotSupport {
  private readonly o: SnapshotOptions;
  private format: string | { error: string } | undefined;
  /** On snapshot create Firecracker sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the guest closes its connections. */
  readonly keepsConnections = false;

  constructor(o: SnapshotOptions) {
    this.o = o;
  }

  /**
   * What a saved state depends on besides the images: the Firecracker version and its state
   * format (a state file loads only in a Firecracker whose format has the same major), KVM or
   * the double, jailed or not (the paths inside the state differ), and the host (Firecracker
   * supports restoring only on the same CPU model and host kernel it was taken on).
   */
  get fingerprint(): string {
    let format: string;
    try { format = this.snapshotFormat(); } catch { format = 'unknown'; }
    return [
      `firecracker ${this.o.probe.version.text}`, `snapshot-format ${format}`, this.o.accel, this.o.jailer ? 'jailer' : 'no-jailer',
      `cpu ${hostCpuModel()}`, `host-kernel ${release()}`, SNAPSHOT_LAYOUT,
    ].join(' | ');
  }

  /**
   * PATCH /vm Paused, PUT /snapshot/create (Full), then the VM is killed: it is paused, there is
   * nothing to shut down, and the files are complete once Firecracker has answered; with
   * keepRunning (a fork) PATCH /vm Resumed instead. Under the
   * jailer Firecracker can write only inside its chroot, as the jail uid: the two files are
   * created there for it first, then moved into `dir`.
   */
  async save(handle: VmHandle, dirArg: string, o: SaveOptions = {}): Promise<{ bytes: number }> {
    const dir = resolve(dirArg); // Firecracker resolves relative paths against its own working directory
    if (!(handle instanceof FirecrackerVm) || !handle.client || !handle.started) {
      throw new FirecrackerError('FIRECRACKER_SNAPSHOT', 'only a running VM started by this Firecracker backend can be snapshotted');
    }
    const vm = handle;
    const client = handle.client;
    const out = { state: join(dir, SNAPSHOT_FILES.state), memory: join(dir, SNAPSHOT_FILES.memory) };
    const jail = this.o.jailer;
    const written = vm.layout ? { state: join(vm.layout.root, SNAPSHOT_FILES.state), memory: join(vm.layout.root, SNAPSHOT_FILES.memory) } : out;
    const paths: FcSnapshotPaths = vm.layout
      ? { snapshotPath: `/${SNAPSHOT_FILES.state}`, memFilePath: `/${SNAPSHOT_FILES.memory}` }
      : { snapshotPath: out.state, memFilePath: out.memory };
    let format: string;
    try {
      format = this.snapshotFormat();
      mkdirSync(dir, { recursive: true });
      if (vm.layout && jail) for (const f of Object.values(written)) { writeFileSync(f, ''); chownSync(f, jail.uid, jail.gid); }
      for (const r of saveRequests(paths)) {
        if (r.path === '/snapshot/create') await o.onStopped?.();
        await client.request(r.method as 'PUT' | 'PATCH', r.path, r.body, SNAPSHOT_CREATE_TIMEOUT_MS);
      }
      if (vm.layout) { moveFile(written.state, out.state); moveFile(written.memory, out.memory); }
    } catch (e) {
      // A failed save leaves the VM running where it can (a failed pause keeps the sandbox).
      if (!(await this.resumeVm(vm))) await vm.kill();
      throw isFirecrackerError(e) ? e : new FirecrackerError('FIRECRACKER_SNAPSHOT', `could not save the VM into ${dir}: ${(e as Error).message}`, { cause: e });
    }
    if (!o.keepRunning) await vm.kill();
    else if (!(await this.resumeVm(vm))) {
      await vm.kill();
      throw new FirecrackerError('FIRECRACKER_SNAPSHOT', 'the VM could not be resumed after its snapshot');
    }
    const meta: SnapshotMeta = {
      format: SNAPSHOT_LAYOUT,
      firecracker_version: this.o.probe.version.text,
      snapshot_format: format,
      jailed: !!vm.layout,
      vsock_uds_path: vm.guestVsock,
      created: new Date().toISOString(),
    };
    writeFileSync(join(dir, SNAPSHOT_FILES.meta), JSON.stringify(meta, null, 2) + '\n');
    return { bytes: statSync(out.state).size + statSync(out.memory).size };
  }

  /** PATCH /vm Resumed; false if Firecracker did not take it. */
  private async resumeVm(vm: FirecrackerVm): Promise<boolean> {
    try {
      await vm.client!.request(RESUME_VM.method as 'PATCH', RESUME_VM.path, RESUME_VM.body, SNAPSHOT_CREATE_TIMEOUT_MS);
      return true;
    } catch {
      return false;
    }
  }

  /** Checks the snapshot can be loaded here (else FIRECRACKER_SNAPSHOT, before any process), then starts the clone. */
  async restore(spec: BootSpec, dirArg: string): Promise<VmHandle> {
    const dir = resolve(dirArg);
    let meta: SnapshotMeta;
    try {
      meta = JSON.parse(readFileSync(join(dir, SNAPSHOT_FILES.meta), 'utf8')) as SnapshotMeta;
    } catch (e) {
      throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `${dir} has no readable ${SNAPSHOT_FILES.meta}: ${(e as Error).message}`, { cause: e });
    }
    const here = { format: SNAPSHOT_LAYOUT, firecracker_version: this.o.probe.version.text, snapshot_format: this.snapshotFormat(), jailed: !!this.o.jailer };
    for (const [k, v] of Object.entries(here)) {
      if (meta[k as keyof typeof here] !== v) {
        throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `snapshot ${dir} has ${k} ${JSON.stringify(meta[k as keyof typeof here])} but this backend has ${JSON.stringify(v)}: Firecracker could not load it`);
      }
    }
    for (const f of [SNAPSHOT_FILES.state, SNAPSHOT_FILES.memory]) {
      if (!existsSync(join(dir, f))) throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `snapshot ${dir} has no ${f} file`);
    }
    // Every clone must map the one memory file (the same inode: one page cache, shared until a
    // clone writes a page), which a hard link into its chroot gives only on the same filesystem.
    return this.o.start(spec, this.load(), this.o.jailer ? stageOnJailFilesystem(dir, this.o.jailer.chrootBase) : dir);
  }

  /** A clone's configuration step: logger/metrics, then PUT /snapshot/load (resumed). */
  private load(): Configure {
    return async ({ version, vm, place, send }) => {
      const probed = this.o.probe.version.text;
      if (version.text !== probed) throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `the Firecracker API reports ${version.text} but the snapshot was checked against ${probed}`);
      // 1.16+: name this clone's socket explicitly. 1.15: the recorded path already resolves to
      // this clone's own (relative to its run dir, or inside its own chroot).
      const vsockUdsOverride = supportsVsockOverride(version) ? (place.layout ? place.layout.vsock.inJail : place.host.vsock) : undefined;
      if (vsockUdsOverride) vm.guestVsock = vsockUdsOverride;
      for (const r of restoreRequests({ ...place.snapshot!.load, logFile: place.guest.logFile, metricsFile: place.guest.metricsFile, vsockUdsOverride })) await send(r);
    };
  }

  /** `firecracker --snapshot-version`, asked once; throws FIRECRACKER_SNAPSHOT if it gave none. */
  private snapshotFormat(): string {
    this.format ??= probeSnapshotFormat(this.o.probe.binary);
    if (typeof this.format !== 'string') {
      throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `\`${this.o.probe.binary} --snapshot-version\` gave no snapshot format version (${this.format.error}), so snapshots are unavailable and sandboxes cold-boot`);
    }
    return this.format;
  }
}

/** The host CPU's model name (a snapshot restores only on the CPU model it was taken on). */
function hostCpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * The snapshot's files where a clone's jail can hard-link them: `dir` itself when it is on the
 * chroot base's filesystem, else one copy per snapshot in <chroot base>/.emberd-snapshots/<hash of
 * dir>/, made once and reused while the source files are unchanged (size and mtime), so all clones
 * still share one memory file instead of each getting a copy. Copies of snapshots that no longer
 * exist are removed on the way.
 */
export function stageOnJailFilesystem(dir: string, chrootBase: string): string {
  mkdirSync(chrootBase, { recursive: true });
  if (statSync(dir).dev === statSync(chrootBase).dev) return dir;
  const root = join(chrootBase, STAGE_DIR);
  mkdirSync(root, { recursive: true, mode: 0o711 });
  const files = [SNAPSHOT_FILES.state, SNAPSHOT_FILES.memory];
  const want = { source: dir, files: Object.fromEntries(files.map((f) => { const st = statSync(join(dir, f)); return [f, { size: st.size, mtimeMs: st.mtimeMs }]; })) };
  const staged = join(root, createHash('sha256').update(dir).digest('hex').slice(0, 16));
  const current = () => { try { return readFileSync(join(staged, STAGE_RECORD), 'utf8') === JSON.stringify(want); } catch { return false; } };
  for (const name of readdirSync(root)) {
    if (join(root, name) === staged || name.includes('.tmp-')) continue;
    let source: unknown;
    try { source = JSON.parse(readFileSync(join(root, name, STAGE_RECORD), 'utf8')).source; } catch { source = undefined; }
    if (typeof source !== 'string' || !existsSync(source)) rmSync(join(root, name), { recursive: true, force: true });
  }
  if (current()) return staged;
  const tmp = `${staged}.tmp-${process.pid}-${stageCount++}`;
  try {
    mkdirSync(tmp, { mode: 0o711 });
    for (const f of files) {
      copyFileSync(join(dir, f), join(tmp, f), fsc.COPYFILE_FICLONE);
      const st = statSync(join(dir, f));
      chownSync(join(tmp, f), st.uid, st.gid);
    }
    writeFileSync(join(tmp, STAGE_RECORD), JSON.stringify(want));
    rmSync(staged, { recursive: true, force: true });
    try { renameSync(tmp, staged); } catch (e) { if (!current()) throw e; } // a concurrent restore staged it first
  } catch (e) {
    throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `cannot copy snapshot ${dir} onto the jail filesystem (${chrootBase}): ${(e as Error).message}; put the images dir on the same filesystem as --jailer-base to hard-link instead`, { cause: e });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return staged;
}

const STAGE_DIR = '.emberd-snapshots';
const STAGE_RECORD = 'source.json';
let stageCount = 0;

/** rename(2), or copy + unlink across filesystems. */
function moveFile(src: string, dst: string): void {
  try {
    renameSync(src, dst);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    copyFileSync(src, dst, fsc.COPYFILE_FICLONE);
    rmSync(src, { force: true });
  }
}
