// What every backend's VmHandle shares: the control stream it was handed, the console tail, and
// the staged stop (grace for the guest -> ask the VMM -> SIGKILL).
import type { Socket } from 'node:net';
import type { VmExit } from './backend.ts';
import type { ConsoleBuffer } from './console-buffer.ts';
import { settlesWithin } from '../settles-within.ts';

/** How a backend's VMM is ended, for VmBase.stopInStages. */
export interface StopStages {
  /** Whether the VMM process still runs. */
  running(): boolean;
  /** Asks the VMM to end the VM (QMP quit, SendCtrlAltDel); true if it was asked. */
  ask?(): Promise<boolean>;
  /** How long to wait for the VMM to exit once asked. */
  askWaitMs?: number;
  kill(): void;
}

export abstract class VmBase {
  abstract readonly exited: Promise<VmExit>;
  private controlSocket: Socket | undefined;
  private readonly console: ConsoleBuffer;
  private stopping: Promise<VmExit> | undefined;

  constructor(console: ConsoleBuffer) {
    this.console = console;
  }

  /** Called once the backend has connected the guest's control channel. */
  attach(s: Socket): void {
    this.controlSocket = s;
  }

  get control(): Socket {
    if (!this.controlSocket) throw new Error('control stream not connected');
    return this.controlSocket;
  }

  consoleTail(maxBytes?: number): string {
    return this.console.tail(maxBytes);
  }

  /** Closes the control stream; for the backend's exit handling. */
  protected dropControl(): void {
    this.controlSocket?.destroy();
  }

  /**
   * The stop every backend does, once (later callers get the same promise): wait up to graceMs
   * for the VMM to exit by itself (the guest powers off after SHUTDOWN), then ask the VMM to end
   * the VM and wait, then SIGKILL.
   */
  protected stopInStages(graceMs: number, stages: StopStages): Promise<VmExit> {
    this.stopping ??= (async () => {
      if (stages.running() && graceMs > 0) await settlesWithin(this.exited, graceMs);
      if (stages.running() && stages.ask && (await stages.ask())) await settlesWithin(this.exited, stages.askWaitMs ?? 1000);
      if (stages.running()) stages.kill();
      return this.exited;
    })();
    return this.stopping;
  }
}
