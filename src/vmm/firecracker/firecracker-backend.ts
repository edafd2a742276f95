// The Firecracker backend: one `firecracker --api-sock` process per VM (optionally under the
// jailer), configured over its API, reached through hybrid vsock.
//
// boot(): remove stale sockets -> spawn (PDEATHSIG) -> wait for the API socket -> GET /version
// (refuse unsupported) -> PUT logger/metrics (optional), machine-config, boot-source, drives/pack,
// vsock -> PUT /actions InstanceStart -> CONNECT 1024 over the vsock UDS, retried until the guest
// agent listens or the deadline passes.
// stop(): grace period (the guest powers off by itself after SHUTDOWN) -> SendCtrlAltDel -> SIGKILL;
// then every socket and file (and the jail) is removed.
// snapshots.save(): PATCH /vm Paused -> PUT /snapshot/create Full -> SIGKILL. snapshots.restore():
// a fresh process -> GET /version -> PUT /snapshot/load (resume_vm) -> CONNECT 1024 again. How each
// clone gets a vsock socket of its own: docs/firecracker.md "Snapshots".
import { accessSync, constants as fsc, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { VmBase } from '../vm-base.ts';
import { execFileSync } from 'node:child_process';
import { release } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, BackendInfo, BootSpec, SnapshotSupport, VmExit, VmHandle, VmResources } from '../backend.ts';
import { connectHybridVsock, connectUnix } from '../../agent/connect.ts';
import { isEmberdError } from '../../errors.ts';
import type { ConsoleBuffer } from '../console-buffer.ts';
import { spawnVmm, type VmmProcess } from '../vmm-process.ts';
import { FirecrackerApiClient } from './api-client.ts';
import {
  AGENT_VSOCK_PORT, bootRequests, firecrackerInstanceId, INSTANCE_START, restoreRequests, saveRequests, SEND_CTRL_ALT_DEL, SNAPSHOT_FILES,
  type FcGuestPaths, type FcSnapshotPaths,
} from './boot-config.ts';
import { FirecrackerError, isFirecrackerError } from './errors.ts';
import { describeFirecrackerExit } from './exit-codes.ts';
import {
  cgroupDir, cgroupLimits, checkJailPathLengths, hostCgroupV2, jailerArgs, jailIdFor, jailLayout, jailTag, linkIntoJail, prepareJail, readJailPid, reapStaleJails, removeJail,
  type CgroupV2Info, type JailerOptions, type JailLayout,
} from './jailer.ts';
import { requireSupportedVersion, SUPPORTED_TEXT, supportsVsockOverride, type FcVersion } from './version.ts';

/** Printed by test/firecracker-double on --version after Firecracker's own line. */
export const DOUBLE_MARKER = 'emberd-firecracker-double';

export interface FirecrackerBackendOptions {
  /** firecracker binary (or the test double); default: PATH, /usr/local/bin, /usr/bin */
  binary?: string;
  /** run every VM under the jailer with these options */
  jailer?: JailerOptions;
  /** also PUT /logger and /metrics with files next to the sockets (default: logs go to stdout, kept in the console tail) */
  logFiles?: boolean;
  /** per API request (default 10 s, never past the boot deadline) */
  apiTimeoutMs?: number;
  /** how long stop() waits after SendCtrlAltDel before SIGKILL (default 1500 ms) */
  ctrlAltDelWaitMs?: number;
  /** shown in GET / (why this backend was chosen) */
  reason?: string;
  warnings?: string[];
  log?: (msg: string) => void;
}

export interface FirecrackerProbe {
  binary: string;
  version: FcVersion;
  /** the binary is emberd's API test double (QEMU underneath), not Firecracker */
  isDouble: boolean;
}

const DEFAULT_DIRS = ['/usr/local/bin', '/usr/bin'];

/** The vsock UDS, relative to a non-jailed Firecracker's working directory (the VM's run dir). */
const VSOCK_UDS_NAME = 'firecracker.vsock';

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

/** Finds an executable by explicit path, else on PATH, else in /usr/local/bin and /usr/bin. */
export function findExecutable(name: string, explicit?: string): string | undefined {
  const candidates = explicit ? [explicit] : [...(process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, name)), ...DEFAULT_DIRS.map((d) => join(d, name))];
  return candidates.find((c) => { try { accessSync(c, fsc.X_OK); return true; } catch { return false; } });
}

/** Locates the binary and asks it `--version`; throws FIRECRACKER_NOT_FOUND / _UNSUPPORTED_VERSION. */
export function probeFirecracker(explicit?: string): FirecrackerProbe {
  const binary = findExecutable('firecracker', explicit);
  if (!binary) {
    throw new FirecrackerError('FIRECRACKER_NOT_FOUND', explicit
      ? `${explicit} is not an executable file; pass the path of a Firecracker ${SUPPORTED_TEXT} binary with --firecracker`
      : `no firecracker binary on PATH or in ${DEFAULT_DIRS.join(', ')}; install Firecracker ${SUPPORTED_TEXT} (see docs/firecracker.md) or pass --firecracker PATH`);
  }
  let out: string;
  try {
    out = execFileSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new FirecrackerError('FIRECRACKER_NOT_FOUND', `${binary} --version failed: ${(e as Error).message}`, { cause: e });
  }
  const version = requireSupportedVersion(out.split('\n')[0] ?? '', binary);
  return { binary, version, isDouble: out.includes(DOUBLE_MARKER) };
}

export class FirecrackerBackend implements Backend {
  readonly name = 'firecracker' as const;
  readonly info: BackendInfo;
  private readonly probe: FirecrackerProbe;
  private readonly o: FirecrackerBackendOptions;
  private readonly cgroup: CgroupV2Info | undefined;
  private reaped: Promise<void> | undefined;
  private format: string | { error: string } | undefined;
  /** Golden snapshots: docs/snapshots.md "Firecracker". */
  readonly snapshots: SnapshotSupport;

  constructor(o: FirecrackerBackendOptions = {}, probe?: FirecrackerProbe) {
    this.o = o;
    this.probe = probe ?? probeFirecracker(o.binary);
    this.cgroup = o.jailer ? hostCgroupV2() : undefined;
    const warnings = [...(o.warnings ?? [])];
    if (this.probe.isDouble) {
      warnings.push(`${this.probe.binary} is emberd's Firecracker API test double: every API request is checked against Firecracker's spec, but guests run under QEMU -M microvm (software emulation), not Firecracker/KVM.`);
    }
    if (o.jailer && !this.cgroup?.controllers.size) warnings.push('the jailer runs without cgroup limits: no cgroup v2 hierarchy with cpu/memory/pids controllers was found');
    this.info = {
      name: 'firecracker',
      binary: this.probe.binary,
      version: this.probe.version.text,
      accel: this.probe.isDouble ? 'tcg (test double)' : 'kvm',
      reason: [o.reason ?? '--backend firecracker', o.jailer ? `jailer ${o.jailer.binary} (chroot base ${o.jailer.chrootBase}, uid ${o.jailer.uid}, gid ${o.jailer.gid})` : 'no jailer'].join('; '),
      warnings,
    };
    const fingerprint = () => this.fingerprint();
    this.snapshots = {
      get fingerprint() { return fingerprint(); },
      save: (vm, dir) => this.save(vm, dir),
      restore: (spec, dir) => this.restore(spec, dir),
    };
  }

  boot(spec: BootSpec): Promise<VmHandle> {
    return this.start(spec);
  }

  /**
   * Cold boot, or (given `snap`) a clone of a saved VM: the same process set-up either way, then
   * either the configuration requests + InstanceStart, or logger/metrics + `PUT /snapshot/load`.
   */
  private async start(spec: BootSpec, snap?: { dir: string }): Promise<FirecrackerVm> {
    mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
    const jail = this.o.jailer;
    if (jail) await (this.reaped ??= this.reapStale(jail, dirname(spec.runDir)));

    // Where things are for emberd (host) and for Firecracker (guest paths, chroot-relative if jailed).
    let layout: JailLayout | undefined;
    let cgDir: string | undefined;
    let host: { api: string; vsock: string; log?: string; metrics?: string };
    let guest: FcGuestPaths;
    let snapPaths: FcSnapshotPaths | undefined;
    if (jail) {
      layout = jailLayout(jail, this.probe.binary, jailIdFor(spec.id, dirname(spec.runDir)));
      checkJailPathLengths(layout);
      host = { api: layout.api.host, vsock: layout.vsock.host };
      guest = { kernel: layout.kernel.inJail, initramfs: layout.initramfs.inJail, pack: layout.pack.inJail, vsockUds: layout.vsock.inJail };
      if (this.o.logFiles) { host.log = layout.log.host; guest.logFile = layout.log.inJail; }
      if (snap) snapPaths = { snapshotPath: `/${SNAPSHOT_FILES.state}`, memFilePath: `/${SNAPSHOT_FILES.memory}` };
    } else {
      host = { api: join(spec.runDir, 'firecracker.sock'), vsock: join(spec.runDir, VSOCK_UDS_NAME) };
      // The vsock UDS path is relative on purpose: Firecracker binds it against its working
      // directory (this VM's run dir), and a snapshot records it verbatim, so each clone of a
      // snapshot binds a socket of its own, even on 1.15 which has no vsock_override.
      guest = { kernel: spec.kernel, initramfs: spec.initramfs, pack: spec.packImage, vsockUds: VSOCK_UDS_NAME };
      if (this.o.logFiles) {
        host.log = join(spec.runDir, 'firecracker.log');
        host.metrics = join(spec.runDir, 'firecracker.metrics');
        guest.logFile = host.log;
        guest.metricsFile = host.metrics;
      }
      if (snap) snapPaths = { snapshotPath: join(snap.dir, SNAPSHOT_FILES.state), memFilePath: join(snap.dir, SNAPSHOT_FILES.memory) };
    }

    // Firecracker never unlinks its sockets and refuses to bind over an existing one.
    removeStaleSockets(host);

    let proc: FcProcess;
    try {
      if (jail && layout) {
        let copied = prepareJail(layout, { kernel: spec.kernel, initramfs: spec.initramfs, pack: spec.packImage });
        // A clone's own chroot gets the snapshot's files (hard links: the memory file is mapped
        // MAP_PRIVATE, never written), at the chroot-relative paths the load request names.
        if (snap) copied += linkIntoJail(layout, [SNAPSHOT_FILES.state, SNAPSHOT_FILES.memory].map((f) => ({ src: join(snap.dir, f), inJail: `/${f}` })));
        if (copied) this.o.log?.(`${spec.id}: ${copied} file(s) copied into the jail (the images or snapshots are on another filesystem than ${jail.chrootBase}; put them on the same one to hard-link instead)`);
        if (host.log) { writeFileSync(host.log, ''); chownSync(host.log, jail.uid, jail.gid); }
        const limits = cgroupLimits(spec.machine, this.cgroup);
        cgDir = cgroupDir(jail, layout, this.cgroup, limits);
        proc = await startJailed(spawnVmm(jail.binary, jailerArgs(jail, layout, this.probe.binary, limits)), layout, jail.newPidNs ?? true, spec.deadline);
      } else {
        for (const f of [host.log, host.metrics]) if (f) writeFileSync(f, '');
        proc = directProcess(spawnVmm(this.probe.binary, ['--api-sock', host.api, '--id', firecrackerInstanceId(spec.id)], { cwd: spec.runDir }));
      }
    } catch (e) {
      if (layout) await removeJail(layout, cgDir).catch(() => {});
      throw isFirecrackerError(e) ? e : new FirecrackerError('FIRECRACKER_JAILER', `could not start the jailer: ${(e as Error).message}`, { cause: e });
    }

    const vm = new FirecrackerVm(proc, host, layout, cgDir, this.o.ctrlAltDelWaitMs ?? 1500, guest.vsockUds);
    const died = vm.exited.then((e) => {
      throw new FirecrackerError('FIRECRACKER_EXITED', `Firecracker exited during ${snap ? 'the snapshot load' : 'start'} (${e.reason}): ${proc.console.tail(2000).trim() || 'no output'}${logTail(host.log)}`);
    });
    died.catch(() => {});
    const race = <T>(p: Promise<T>): Promise<T> => Promise.race([p, died]);
    const apiTimeout = () => Math.max(500, Math.min(this.o.apiTimeoutMs ?? 10_000, spec.deadline - Date.now()));
    try {
      try {
        (await race(connectUnix(host.api, spec.deadline))).destroy();
      } catch (e) {
        if (isEmberdError(e, 'BOOT_TIMEOUT')) throw new FirecrackerError('FIRECRACKER_API_TIMEOUT', `the Firecracker API socket ${host.api} did not accept connections before the boot deadline`, { cause: e });
        throw e;
      }
      const client = new FirecrackerApiClient(host.api, { timeoutMs: this.o.apiTimeoutMs ?? 10_000 });
      vm.client = client;
      const reported = await race(client.get<{ firecracker_version?: unknown }>('/version', apiTimeout()));
      const version = requireSupportedVersion(String(reported.body?.firecracker_version ?? ''), `the Firecracker API at ${host.api}`);
      if (snapPaths) {
        if (version.text !== this.probe.version.text) throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `the Firecracker API reports ${version.text} but the snapshot was checked against ${this.probe.version.text}`);
        // 1.16+: name this clone's socket explicitly. 1.15: the recorded path already resolves to
        // this clone's own (relative to its run dir, or inside its own chroot).
        const vsockUdsOverride = supportsVsockOverride(version) ? (layout ? layout.vsock.inJail : host.vsock) : undefined;
        if (vsockUdsOverride) vm.guestVsock = vsockUdsOverride;
        for (const r of restoreRequests({ ...snapPaths, logFile: guest.logFile, metricsFile: guest.metricsFile, vsockUdsOverride })) {
          await race(client.request(r.method as 'PUT', r.path, r.body, apiTimeout()));
        }
      } else {
        for (const r of bootRequests(spec, guest)) await race(client.request(r.method as 'PUT', r.path, r.body, apiTimeout()));
        await race(client.request('PUT', INSTANCE_START.path, INSTANCE_START.body, apiTimeout()));
      }
      vm.started = true;
      // After a load the guest's vsock connections are reset (Firecracker resets the device at
      // snapshot time); its agent listens again and a fresh CONNECT reaches it.
      const control = await race(connectHybridVsock(host.vsock, AGENT_VSOCK_PORT, spec.deadline));
      vm.attach(control);
      return vm;
    } catch (e) {
      await vm.stop(0);
      if (isFirecrackerError(e) && e.fcCode === 'FIRECRACKER_API_ERROR' && host.log) throw new FirecrackerError(e.fcCode, `${e.message.replace(/^\[\w+\] /, '')}${logTail(host.log)}`);
      throw e;
    }
  }

  // ---- snapshots ----

  /** `firecracker --snapshot-version` (the state file format), asked once; throws FIRECRACKER_SNAPSHOT if it gave none. */
  private snapshotFormat(): string {
    if (this.format === undefined) {
      try {
        const out = execFileSync(this.probe.binary, ['--snapshot-version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
        this.format = /^v?(\d+\.\d+\.\d+)\s*$/.exec(out.trim())?.[1] ?? { error: `it printed ${JSON.stringify(out.trim().slice(0, 80))}` };
      } catch (e) {
        this.format = { error: (e as Error).message };
      }
    }
    if (typeof this.format !== 'string') {
      throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `\`${this.probe.binary} --snapshot-version\` gave no snapshot format version (${this.format.error}), so snapshots are unavailable and sandboxes cold-boot`);
    }
    return this.format;
  }

  /**
   * What a saved state depends on besides the images: the Firecracker version and its state
   * format (a state file loads only in a Firecracker whose format has the same major), KVM or
   * the double, jailed or not (the paths inside the state differ), and the host (Firecracker
   * supports restoring only on the same CPU model and host kernel it was taken on).
   */
  private fingerprint(): string {
    let format: string;
    try { format = this.snapshotFormat(); } catch { format = 'unknown'; }
    return [
      `firecracker ${this.probe.version.text}`, `snapshot-format ${format}`, this.info.accel, this.o.jailer ? 'jailer' : 'no-jailer',
      `cpu ${hostCpuModel()}`, `host-kernel ${release()}`, SNAPSHOT_LAYOUT,
    ].join(' | ');
  }

  /**
   * PATCH /vm Paused, PUT /snapshot/create (Full), then the VM is killed: it is paused, there is
   * nothing to shut down, and the files are complete once Firecracker has answered. Under the
   * jailer Firecracker can write only inside its chroot, as the jail uid: the two files are
   * created there for it first, then moved into `dir`.
   */
  private async save(handle: VmHandle, dirArg: string): Promise<{ bytes: number }> {
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
      for (const r of saveRequests(paths)) await client.request(r.method as 'PUT' | 'PATCH', r.path, r.body, SNAPSHOT_CREATE_TIMEOUT_MS);
      if (vm.layout) { moveFile(written.state, out.state); moveFile(written.memory, out.memory); }
    } catch (e) {
      throw isFirecrackerError(e) ? e : new FirecrackerError('FIRECRACKER_SNAPSHOT', `could not save the VM into ${dir}: ${(e as Error).message}`, { cause: e });
    } finally {
      await vm.kill();
    }
    const meta: SnapshotMeta = {
      format: SNAPSHOT_LAYOUT,
      firecracker_version: this.probe.version.text,
      snapshot_format: format,
      jailed: !!vm.layout,
      vsock_uds_path: vm.guestVsock,
      created: new Date().toISOString(),
    };
    writeFileSync(join(dir, SNAPSHOT_FILES.meta), JSON.stringify(meta, null, 2) + '\n');
    return { bytes: statSync(out.state).size + statSync(out.memory).size };
  }

  /** Checks the snapshot can be loaded here (else FIRECRACKER_SNAPSHOT, before any process), then starts the clone. */
  private async restore(spec: BootSpec, dirArg: string): Promise<VmHandle> {
    const dir = resolve(dirArg);
    let meta: SnapshotMeta;
    try {
      meta = JSON.parse(readFileSync(join(dir, SNAPSHOT_FILES.meta), 'utf8')) as SnapshotMeta;
    } catch (e) {
      throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `${dir} has no readable ${SNAPSHOT_FILES.meta}: ${(e as Error).message}`, { cause: e });
    }
    const here = { format: SNAPSHOT_LAYOUT, firecracker_version: this.probe.version.text, snapshot_format: this.snapshotFormat(), jailed: !!this.o.jailer };
    for (const [k, v] of Object.entries(here)) {
      if (meta[k as keyof typeof here] !== v) {
        throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `snapshot ${dir} has ${k} ${JSON.stringify(meta[k as keyof typeof here])} but this backend has ${JSON.stringify(v)}: Firecracker could not load it`);
      }
    }
    for (const f of [SNAPSHOT_FILES.state, SNAPSHOT_FILES.memory]) {
      if (!existsSync(join(dir, f))) throw new FirecrackerError('FIRECRACKER_SNAPSHOT', `snapshot ${dir} has no ${f} file`);
    }
    return this.start(spec, { dir });
  }

  private async reapStale(jail: JailerOptions, runBase: string): Promise<void> {
    const n = await reapStaleJails(jail, this.probe.binary.split('/').pop()!, jailTag(runBase), this.cgroup, this.o.log).catch(() => 0);
    if (n) this.o.log?.(`removed ${n} stale jail(s) under ${jail.chrootBase}`);
  }
}

function logTail(file: string | undefined): string {
  if (!file) return '';
  try {
    const t = readFileSync(file, 'utf8').trim();
    return t ? `; Firecracker log: ${t.slice(-1500)}` : '';
  } catch {
    return '';
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

function removeStaleSockets(host: { api: string; vsock: string }): void {
  rmSync(host.api, { force: true });
  rmSync(host.vsock, { force: true });
  const dir = dirname(host.vsock);
  const base = host.vsock.slice(dir.length + 1);
  try {
    for (const n of readdirSync(dir)) if (n.startsWith(`${base}_`)) rmSync(join(dir, n), { force: true });
  } catch { /* no dir yet */ }
}

/** The Firecracker process as the VM handle sees it, whether spawned directly or by the jailer. */
interface FcProcess {
  pid: number;
  console: ConsoleBuffer;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; statusKnown: boolean }>;
  isRunning(): boolean;
  kill(signal: NodeJS.Signals): void;
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

class FirecrackerVm extends VmBase implements VmHandle {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  client: FirecrackerApiClient | undefined;
  started = false;
  private stopping: Promise<VmExit> | undefined;
  private readonly proc: FcProcess;
  private readonly paths: string[];
  private readonly ctrlAltDelWaitMs: number;

  /** the VM's jail, when jailed */
  readonly layout: JailLayout | undefined;
  /** the vsock uds_path Firecracker bound, as it was given (what a snapshot of this VM records) */
  guestVsock: string;

  constructor(proc: FcProcess, host: { api: string; vsock: string; log?: string; metrics?: string }, layout: JailLayout | undefined, cgDir: string | undefined, ctrlAltDelWaitMs: number, guestVsock: string) {
    super(proc.console);
    this.layout = layout;
    this.guestVsock = guestVsock;
    this.proc = proc;
    this.pid = proc.pid;
    this.ctrlAltDelWaitMs = ctrlAltDelWaitMs;
    this.paths = layout ? [layout.jailDir, ...(cgDir ? [cgDir] : [])] : [host.api, host.vsock, ...(host.log ? [host.log] : []), ...(host.metrics ? [host.metrics] : [])];
    this.exited = proc.exited.then(async ({ code, signal, statusKnown }) => {
      this.dropControl();
      this.client?.close();
      // Firecracker removes none of its sockets, on any exit: do it for it.
      removeStaleSockets(host);
      for (const f of [host.log, host.metrics]) if (f) rmSync(f, { force: true });
      if (layout) await removeJail(layout, cgDir).catch(() => {});
      const reason = statusKnown ? describeFirecrackerExit(code, signal) : 'Firecracker exited (it ran in its own PID namespace under the jailer, so its exit status is not visible)';
      return { code, signal, reason };
    });
  }

  resources(): VmResources {
    return { pid: this.pid, paths: [...this.paths] };
  }

  /** SIGKILL at once (a paused VM whose snapshot is written has nothing to shut down). */
  kill(): Promise<VmExit> {
    this.stopping ??= (async () => {
      this.proc.kill('SIGKILL');
      return this.exited;
    })();
    return this.stopping;
  }

  stop(graceMs: number): Promise<VmExit> {
    this.stopping ??= (async () => {
      if (this.proc.isRunning() && graceMs > 0) await Promise.race([this.exited, delay(graceMs)]);
      // SendCtrlAltDel only exists after InstanceStart (before it Firecracker answers 400).
      if (this.proc.isRunning() && this.started && this.client) {
        const asked = await this.client.request('PUT', SEND_CTRL_ALT_DEL.path, SEND_CTRL_ALT_DEL.body, 1000).then(() => true, () => false);
        if (asked) await Promise.race([this.exited, delay(this.ctrlAltDelWaitMs)]);
      }
      if (this.proc.isRunning()) this.proc.kill('SIGKILL');
      return this.exited;
    })();
    return this.stopping;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
