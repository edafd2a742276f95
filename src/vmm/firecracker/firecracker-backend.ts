// The Firecracker backend: one `firecracker --api-sock` process per VM (optionally under the
// jailer), configured over its API, reached through hybrid vsock.
//
// boot(): remove stale sockets -> spawn (PDEATHSIG) -> wait for the API socket -> GET /version
// (refuse unsupported) -> PUT logger/metrics (optional), machine-config, boot-source, drives/pack,
// vsock -> PUT /actions InstanceStart -> CONNECT 1024 over the vsock UDS, retried until the guest
// agent listens or the deadline passes.
// stop(): grace period (the guest powers off by itself after SHUTDOWN) -> SendCtrlAltDel -> SIGKILL;
// then every socket and file (and the jail) is removed.
import { accessSync, constants as fsc, chownSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { delimiter, dirname, join } from 'node:path';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, BackendInfo, BootSpec, VmExit, VmHandle, VmResources } from '../backend.ts';
import { connectHybridVsock, connectUnix } from '../../agent/connect.ts';
import { isEmberdError } from '../../errors.ts';
import type { ConsoleBuffer } from '../console-buffer.ts';
import { spawnVmm, type VmmProcess } from '../vmm-process.ts';
import { FirecrackerApiClient } from './api-client.ts';
import { AGENT_VSOCK_PORT, bootRequests, firecrackerInstanceId, INSTANCE_START, SEND_CTRL_ALT_DEL, type FcGuestPaths } from './boot-config.ts';
import { FirecrackerError, isFirecrackerError } from './errors.ts';
import { describeFirecrackerExit } from './exit-codes.ts';
import {
  cgroupDir, cgroupLimits, checkJailPathLengths, hostCgroupV2, jailerArgs, jailIdFor, jailLayout, jailTag, prepareJail, readJailPid, reapStaleJails, removeJail,
  type CgroupV2Info, type JailerOptions, type JailLayout,
} from './jailer.ts';
import { requireSupportedVersion, SUPPORTED_TEXT, type FcVersion } from './version.ts';

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
  }

  async boot(spec: BootSpec): Promise<VmHandle> {
    mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
    const jail = this.o.jailer;
    if (jail) await (this.reaped ??= this.reapStale(jail, dirname(spec.runDir)));

    // Where things are for emberd (host) and for Firecracker (guest paths, chroot-relative if jailed).
    let layout: JailLayout | undefined;
    let cgDir: string | undefined;
    let host: { api: string; vsock: string; log?: string; metrics?: string };
    let guest: FcGuestPaths;
    if (jail) {
      layout = jailLayout(jail, this.probe.binary, jailIdFor(spec.id, dirname(spec.runDir)));
      checkJailPathLengths(layout);
      host = { api: layout.api.host, vsock: layout.vsock.host };
      guest = { kernel: layout.kernel.inJail, initramfs: layout.initramfs.inJail, pack: layout.pack.inJail, vsockUds: layout.vsock.inJail };
      if (this.o.logFiles) { host.log = layout.log.host; guest.logFile = layout.log.inJail; }
    } else {
      host = { api: join(spec.runDir, 'firecracker.sock'), vsock: join(spec.runDir, 'firecracker.vsock') };
      guest = { kernel: spec.kernel, initramfs: spec.initramfs, pack: spec.packImage, vsockUds: host.vsock };
      if (this.o.logFiles) {
        host.log = join(spec.runDir, 'firecracker.log');
        host.metrics = join(spec.runDir, 'firecracker.metrics');
        guest.logFile = host.log;
        guest.metricsFile = host.metrics;
      }
    }

    // Firecracker never unlinks its sockets and refuses to bind over an existing one.
    removeStaleSockets(host);

    let proc: FcProcess;
    try {
      if (jail && layout) {
        const copied = prepareJail(layout, { kernel: spec.kernel, initramfs: spec.initramfs, pack: spec.packImage });
        if (copied) this.o.log?.(`${spec.id}: ${copied} boot file(s) copied into the jail (the images are on another filesystem than ${jail.chrootBase}; put them on the same one to hard-link instead)`);
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

    const vm = new FirecrackerVm(proc, host, layout, cgDir, this.o.ctrlAltDelWaitMs ?? 1500);
    const died = vm.exited.then((e) => {
      throw new FirecrackerError('FIRECRACKER_EXITED', `Firecracker exited during start (${e.reason}): ${proc.console.tail(2000).trim() || 'no output'}${logTail(host.log)}`);
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
      const version = await race(client.get<{ firecracker_version?: unknown }>('/version', apiTimeout()));
      requireSupportedVersion(String(version.body?.firecracker_version ?? ''), `the Firecracker API at ${host.api}`);
      for (const r of bootRequests(spec, guest)) await race(client.request(r.method as 'PUT', r.path, r.body, apiTimeout()));
      await race(client.request('PUT', INSTANCE_START.path, INSTANCE_START.body, apiTimeout()));
      vm.started = true;
      const control = await race(connectHybridVsock(host.vsock, AGENT_VSOCK_PORT, spec.deadline));
      vm.attach(control);
      return vm;
    } catch (e) {
      await vm.stop(0);
      if (isFirecrackerError(e) && e.fcCode === 'FIRECRACKER_API_ERROR' && host.log) throw new FirecrackerError(e.fcCode, `${e.message.replace(/^\[\w+\] /, '')}${logTail(host.log)}`);
      throw e;
    }
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

class FirecrackerVm implements VmHandle {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  client: FirecrackerApiClient | undefined;
  started = false;
  private controlSocket: Socket | undefined;
  private stopping: Promise<VmExit> | undefined;
  private readonly proc: FcProcess;
  private readonly paths: string[];
  private readonly ctrlAltDelWaitMs: number;

  constructor(proc: FcProcess, host: { api: string; vsock: string; log?: string; metrics?: string }, layout: JailLayout | undefined, cgDir: string | undefined, ctrlAltDelWaitMs: number) {
    this.proc = proc;
    this.pid = proc.pid;
    this.ctrlAltDelWaitMs = ctrlAltDelWaitMs;
    this.paths = layout ? [layout.jailDir, ...(cgDir ? [cgDir] : [])] : [host.api, host.vsock, ...(host.log ? [host.log] : []), ...(host.metrics ? [host.metrics] : [])];
    this.exited = proc.exited.then(async ({ code, signal, statusKnown }) => {
      this.controlSocket?.destroy();
      this.client?.close();
      // Firecracker removes none of its sockets, on any exit: do it for it.
      removeStaleSockets(host);
      for (const f of [host.log, host.metrics]) if (f) rmSync(f, { force: true });
      if (layout) await removeJail(layout, cgDir).catch(() => {});
      const reason = statusKnown ? describeFirecrackerExit(code, signal) : 'Firecracker exited (it ran in its own PID namespace under the jailer, so its exit status is not visible)';
      return { code, signal, reason };
    });
  }

  attach(s: Socket): void {
    this.controlSocket = s;
  }

  get control(): Socket {
    if (!this.controlSocket) throw new Error('control stream not connected');
    return this.controlSocket;
  }

  consoleTail(maxBytes?: number): string {
    return this.proc.console.tail(maxBytes);
  }

  resources(): VmResources {
    return { pid: this.pid, paths: [...this.paths] };
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
