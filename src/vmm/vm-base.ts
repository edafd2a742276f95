// What every backend's VmHandle shares: the control stream it was handed and the console tail.
import type { Socket } from 'node:net';
import type { ConsoleBuffer } from './console-buffer.ts';

export abstract class VmBase {
  private controlSocket: Socket | undefined;
  private readonly console: ConsoleBuffer;

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
}
