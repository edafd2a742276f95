// The QEMU backend: `qemu-system-x86_64 -M microvm`, KVM when usable, else software emulation (TCG).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend, BackendInfo, BootSpec, VmExit, VmHandle, VmResources } from '../backend.ts';
import { connectUnix } from '../../agent/connect.ts';
import { EmberdError } from '../../errors.ts';
import { hostTscKhz, probeKvm } from '../host.ts';
import { spawnVmm, type VmmProcess } from '../vmm-process.ts';
import { QmpClient } from './qmp.ts';
import { qemuArgs, type QemuOptions } from './cmdline.ts';
import type { Socket } from 'node:net';

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

  async boot(spec: BootSpec): Promise<VmHandle> {
    mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
    const paths = { controlSocket: join(spec.runDir, 'control.sock'), qmpSocket: join(spec.runDir, 'qmp.sock') };
    for (const p of Object.values(paths)) rmSync(p, { force: true });
    const proc = spawnVmm(this.binary, qemuArgs(spec, paths, this.opts), { cwd: spec.runDir });
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
      throw e;
    }
  }
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

class QemuVm implements VmHandle {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  qmp: QmpClient | undefined;
  private controlSocket: Socket | undefined;
  private readonly proc: VmmProcess;
  private readonly paths: { controlSocket: string; qmpSocket: string };
  private stopping: Promise<VmExit> | undefined;

  constructor(proc: VmmProcess, paths: { controlSocket: string; qmpSocket: string }) {
    this.proc = proc;
    this.pid = proc.pid;
    this.paths = paths;
    this.exited = proc.exited.then(({ code, signal }) => {
      this.controlSocket?.destroy();
      this.qmp?.close();
      // QEMU removes its listening sockets on a clean exit, not when killed: do it for it.
      for (const p of Object.values(this.paths)) rmSync(p, { force: true });
      return { code, signal, reason: describeExit(code, signal) };
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
    return { pid: this.pid, paths: Object.values(this.paths) };
  }

  stop(graceMs: number): Promise<VmExit> {
    this.stopping ??= (async () => {
      if (this.proc.isRunning() && graceMs > 0) await Promise.race([this.exited, delay(graceMs)]);
      if (this.proc.isRunning() && this.qmp) {
        await this.qmp.execute('quit', undefined, 1000).catch(() => {});
        await Promise.race([this.exited, delay(1000)]);
      }
      if (this.proc.isRunning()) this.proc.child.kill('SIGKILL');
      return this.exited;
    })();
    return this.stopping;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
