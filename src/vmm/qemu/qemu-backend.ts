// The QEMU backend: `qemu-system-x86_64 -M microvm`, KVM when usable, else software emulation (TCG).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend, BackendInfo, BootSpec, SnapshotSupport, VmExit, VmHandle, VmResources } from '../backend.ts';
import { connectUnix } from '../../agent/connect.ts';
import { EmberdError, isEmberdError } from '../../errors.ts';
import { hostTscKhz, probeKvm } from '../host.ts';
import { spawnVmm, type VmmProcess } from '../vmm-process.ts';
import { QmpClient } from './qmp.ts';
import { VmBase } from '../vm-base.ts';
import { qemuArgs, type QemuOptions } from './cmdline.ts';

export interface QemuBackendOptions {
  binary?: string;
  accel?: 'kvm' | 'tcg' | 'auto';
}

export function findQemu(binary?: string): string {
  const candidates = binary ? [binary] : ['/usr/bin/qemu-system-x86_64', '/usr/local/bin/qemu-system-x86_64'];
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    throw new EmberdError('BOOT_FAILED', `QEMU was not found (looked for ${candidates.join(', ')}); install it with \`apt-get install qemu-system-x86\` or pass --qemu PATH`);
  }
  return found;
}

export class QemuBackend implements Backend {
  readonly name = 'qemu' as const;
  readonly info: BackendInfo;
  private readonly binary: string;
  private readonly opts: QemuOptions;

  constructor(o: QemuBackendOptions = {}) {
    this.binary = findQemu(o.binary);
    const kvm = probeKvm();
    const accel = o.accel && o.accel !== 'auto' ? o.accel : kvm.usable ? 'kvm' : 'tcg';
    this.opts = { accel, tscKhz: accel === 'tcg' ? hostTscKhz() : undefined };
    const version = (/version ([\d.]+)/.exec(execFileSync(this.binary, ['--version'], { encoding: 'utf8' }))?.[1]) ?? 'unknown';
    this.snapshots = {
      fingerprint: `qemu ${version} ${accel} ${SNAPSHOT_FORMAT}`,
      save: (vm, dir) => this.save(vm as QemuVm, dir),
      restore: (spec, dir) => this.restore(spec, dir),
    };
    this.info = {
      name: 'qemu',
      binary: this.binary,
      version,
      accel,
      reason: o.accel && o.accel !== 'auto' ? `acceleration forced to ${accel}` : kvm.reason,
      warnings: accel === 'tcg'
        ? ['KVM is not usable here, so VMs run under software emulation (TCG): boots take seconds and code runs several times slower than on KVM.']
        : [],
    };
  }

  readonly snapshots: SnapshotSupport;

  boot(spec: BootSpec): Promise<VmHandle> {
    return this.launch(spec, []);
  }

  /**
   * Snapshot: QMP stop, then `migrate` the whole state through zstd into a file (QEMU 7.2 has no
   * file: URI, exec: works). The control connection stays open: the guest agent is idle, and a
   * clone simply sees a host connect again. The VM is ended afterwards.
   */
  private async save(vm: QemuVm, dir: string): Promise<{ bytes: number }> {
    if (!vm.qmp) throw new EmberdError('INTERNAL', 'cannot snapshot a VM without its QMP connection');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, STATE_FILE);
    await vm.qmp.execute('stop');
    await vm.qmp.execute('migrate', { uri: `exec:zstd -q -1 -f -o ${shellQuote(file)}` });
    for (;;) {
      const s = (await vm.qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      if (s.status === 'completed') break;
      if (s.status === 'failed' || s.status === 'cancelled') throw new EmberdError('INTERNAL', `QEMU could not save the VM: ${s['error-desc'] ?? s.status}`);
      await delay(20);
    }
    await vm.stop(0);
    return { bytes: statSync(file).size };
  }

  /** Restore: the same machine with `-incoming` reading the state back, then QMP `cont`. */
  private async restore(spec: BootSpec, dir: string): Promise<VmHandle> {
    const file = join(dir, STATE_FILE);
    if (!existsSync(file)) throw new EmberdError('BOOT_FAILED', `snapshot ${file} does not exist`);
    const vm = await this.launch(spec, ['-incoming', `exec:zstd -dcq ${shellQuote(file)}`]);
    try {
      for (;;) {
        const s = (await vm.qmp!.execute('query-status')) as { status: string };
        if (s.status === 'paused' || s.status === 'postmigrate') break;
        if (s.status !== 'inmigrate') throw new EmberdError('BOOT_FAILED', `restoring ${file} left the VM ${s.status}`);
        if (Date.now() > spec.deadline) throw new EmberdError('BOOT_TIMEOUT', `restoring ${file} did not finish before the deadline`);
        await delay(10);
      }
      await vm.qmp!.execute('cont');
      return vm;
    } catch (e) {
      await vm.stop(0);
      throw e instanceof EmberdError ? e : new EmberdError('BOOT_FAILED', `restoring ${file} failed: ${(e as Error).message}; ${vm.consoleTail(1000)}`);
    }
  }

  private async launch(spec: BootSpec, extraArgs: string[]): Promise<QemuVm> {
    mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
    const paths = { controlSocket: join(spec.runDir, 'control.sock'), qmpSocket: join(spec.runDir, 'qmp.sock') };
    for (const p of Object.values(paths)) rmSync(p, { force: true });
    const proc = spawnVmm(this.binary, [...qemuArgs(spec, paths, this.opts), ...extraArgs], { cwd: spec.runDir });
    const vm = new QemuVm(proc, paths);
    const died = proc.exited.then((e) => {
      throw new EmberdError('BOOT_FAILED', `QEMU exited during start (${describeExit(e.code, e.signal)}): ${proc.console.tail(2000).trim()}`);
    });
    died.catch(() => {});
    try {
      // QEMU greets on QMP only once the machine is built (kernel and disks loaded), so a
      // greeting means a bad kernel or image can no longer make this boot fail silently.
      vm.qmp = await Promise.race([connectUnix(paths.qmpSocket, spec.deadline).then((s) => QmpClient.attach(s, Math.max(1000, spec.deadline - Date.now()))), died]);
      vm.attach(await Promise.race([connectUnix(paths.controlSocket, spec.deadline), died]));
      return vm;
    } catch (e) {
      await vm.stop(0);
      if (isEmberdError(e, 'BOOT_FAILED') || isEmberdError(e, 'BOOT_TIMEOUT')) throw e;
      // e.g. the QMP connection closing first when QEMU dies at start: the cause is in the console.
      throw new EmberdError('BOOT_FAILED', `QEMU did not start (${(e as Error).message}): ${proc.console.tail(2000).trim()}`);
    }
  }
}

/** Bumped whenever what save() writes changes meaning. */
const SNAPSHOT_FORMAT = 'migrate-zstd-1';
const STATE_FILE = 'state.zst';

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

class QemuVm extends VmBase implements VmHandle {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  qmp: QmpClient | undefined;
  private readonly proc: VmmProcess;
  private readonly paths: { controlSocket: string; qmpSocket: string };

  constructor(proc: VmmProcess, paths: { controlSocket: string; qmpSocket: string }) {
    super(proc.console);
    this.proc = proc;
    this.pid = proc.pid;
    this.paths = paths;
    this.exited = proc.exited.then(({ code, signal }) => {
      this.dropControl();
      this.qmp?.close();
      // QEMU removes its listening sockets on a clean exit, not when killed: do it for it.
      for (const p of Object.values(this.paths)) rmSync(p, { force: true });
      return { code, signal, reason: describeExit(code, signal) };
    });
  }

  resources(): VmResources {
    return { pid: this.pid, paths: Object.values(this.paths) };
  }

  /** Grace for the guest -> QMP quit (waited for even when it failed: QEMU may be exiting) -> SIGKILL. */
  stop(graceMs: number): Promise<VmExit> {
    return this.stopInStages(graceMs, {
      running: () => this.proc.isRunning(),
      ask: async () => {
        if (!this.qmp) return false;
        await this.qmp.execute('quit', undefined, 1000).catch(() => {});
        return true;
      },
      askWaitMs: 1000,
      kill: () => this.proc.child.kill('SIGKILL'),
    });
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
