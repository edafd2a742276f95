// The VmHandle of one Firecracker VM. stop(): grace period (the guest powers off by itself after
// SHUTDOWN) -> SendCtrlAltDel -> SIGKILL; kill(): SIGKILL at once (a saved, paused VM). Either way,
// once the process is gone every socket and file (and the jail) is removed before `exited` settles.
import type { VmExit, VmHandle, VmResources } from '../backend.ts';
import { VmBase } from '../vm-base.ts';
import type { FirecrackerApiClient } from './api-client.ts';
import { SEND_CTRL_ALT_DEL } from './boot-config.ts';
import { describeFirecrackerExit } from './exit-codes.ts';
import type { JailLayout } from './jailer.ts';
import type { FcInstance } from './process.ts';

export class FirecrackerVm extends VmBase implements VmHandle {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  /** set once the API socket accepts */
  client: FirecrackerApiClient | undefined;
  /** InstanceStart (or the snapshot load) succeeded */
  started = false;
  private readonly instance: FcInstance;
  private readonly ctrlAltDelWaitMs: number;

  /** the VM's jail, when jailed */
  readonly layout: JailLayout | undefined;
  /** the vsock uds_path Firecracker bound, as it was given (what a snapshot of this VM records) */
  guestVsock: string;

  constructor(instance: FcInstance, ctrlAltDelWaitMs: number) {
    super(instance.proc.console);
    this.instance = instance;
    this.layout = instance.place.layout;
    this.guestVsock = instance.place.guest.vsockUds;
    this.pid = instance.proc.pid;
    this.ctrlAltDelWaitMs = ctrlAltDelWaitMs;
    this.exited = instance.proc.exited.then(async ({ code, signal, statusKnown }) => {
      this.dropControl();
      this.client?.close();
      await instance.cleanUp();
      const reason = statusKnown ? describeFirecrackerExit(code, signal) : 'Firecracker exited (it ran in its own PID namespace under the jailer, so its exit status is not visible)';
      return { code, signal, reason };
    });
  }

  resources(): VmResources {
    return { pid: this.pid, paths: [...this.instance.paths] };
  }

  /** SIGKILL at once (a paused VM whose snapshot is written has nothing to shut down). */
  kill(): Promise<VmExit> {
    return this.stopInStages(0, { running: () => this.instance.proc.isRunning(), kill: () => this.instance.proc.kill('SIGKILL') });
  }

  stop(graceMs: number): Promise<VmExit> {
    const proc = this.instance.proc;
    return this.stopInStages(graceMs, {
      running: () => proc.isRunning(),
      // SendCtrlAltDel only exists after InstanceStart (before it Firecracker answers 400).
      ask: async () => !!(this.started && this.client)
        && this.client.request('PUT', SEND_CTRL_ALT_DEL.path, SEND_CTRL_ALT_DEL.body, 1000).then(() => true, () => false),
      askWaitMs: this.ctrlAltDelWaitMs,
      kill: () => proc.kill('SIGKILL'),
    });
  }
}
