// One running QEMU: its process (the spawned wrapper chain, and QEMU itself when a wrapper forked
// it), QMP, the jail and cgroup it is cleaned up with, and the staged stop.
import type { BootSpec, RestorePath, VmExit, VmHandle, VmResources } from '../backend.ts';
import { removeVmCgroup, type VmCgroup } from '../confine/cgroup-v2.ts';
import { VmBase } from '../vm-base.ts';
import type { VmmProcess } from '../vmm-process.ts';
import { removeJail, type JailLayout } from './jail.ts';
import type { StreamSource } from './migration.ts';
import type { QmpClient } from './qmp.ts';

export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

/**
 * QEMU's exit as the forking wrapper reports it. `unshare --fork` passes the signal its child died
 * of on by killing itself with it, except that util-linux 2.38 cannot do that for SIGKILL
 * (`signal(SIGKILL, SIG_DFL)` fails): it then exits 1 with this message, and only SIGKILL does that.
 */
export function qemuExit(e: { code: number | null; signal: NodeJS.Signals | null }, consoleTail: string): { code: number | null; signal: NodeJS.Signals | null } {
  if (e.code === 1 && /unshare: sigprocmask unblock failed/.test(consoleTail)) return { code: null, signal: 'SIGKILL' };
  return e;
}

export class QemuVm extends VmBase implements VmHandle {
  readonly exited: Promise<VmExit>;
  readonly layout: JailLayout;
  qmp: QmpClient | undefined;
  /** What it was started with: a golden's save() builds the shared-memory unit from the same spec. */
  readonly spec: BootSpec;
  restoredFrom?: RestorePath;
  private readonly proc: VmmProcess;
  private readonly cgroup: VmCgroup | undefined;
  /** QEMU's own pid when a wrapper forked it (unshare --fork); until then the spawned process is all we know */
  private qemuPid: number | undefined;

  constructor(spec: BootSpec, proc: VmmProcess, layout: JailLayout, cgroup: VmCgroup | undefined, source?: StreamSource) {
    super(proc.console);
    this.spec = spec;
    this.proc = proc;
    this.layout = layout;
    this.cgroup = cgroup;
    this.exited = proc.exited.then(async (exit) => {
      const { code, signal } = this.qemuPid === undefined ? exit : qemuExit(exit, proc.console.tail(300));
      this.dropControl();
      this.qmp?.close();
      source?.kill();
      // QEMU removes its sockets only on a clean exit, and a chrooted QEMU cannot at all.
      removeJail(layout);
      if (cgroup) await removeVmCgroup(cgroup.dir).catch(() => {});
      return { code, signal, reason: describeExit(code, signal) };
    });
  }

  /** QEMU's pid: the one /proc/PID/status, kill and RSS are about. */
  get pid(): number {
    return this.qemuPid ?? this.proc.pid;
  }

  setQemuPid(pid: number): void {
    this.qemuPid = pid;
  }

  get cgroupDir(): string | undefined {
    return this.cgroup?.dir;
  }

  resources(): VmResources {
    return { pid: this.pid, paths: [this.layout.dir, this.layout.control.host, this.layout.qmp.host, ...(this.cgroup ? [this.cgroup.dir] : [])] };
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
      // QEMU itself: a forking wrapper then dies of the same signal (unshare --fork passes it on).
      kill: () => {
        try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
        if (this.qemuPid === undefined) return;
        // Without QEMU (it died at start) the wrapper still runs: end it too.
        setTimeout(() => { if (this.proc.isRunning()) this.proc.child.kill('SIGKILL'); }, 1000).unref();
      },
    });
  }
}
