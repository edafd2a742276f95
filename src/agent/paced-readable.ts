// An exec's output as a Readable whose consumption paces the guest process: output credit goes
// back to the guest only while this stream's buffer is below its high-water mark, i.e. as fast as
// the consumer reads. A slow reader (an HTTP client, a disk) slows the process instead of growing
// the daemon's memory; the bound is the high-water mark plus the window in flight. Destroying the
// stream before the exec ended (the consumer went away) SIGKILLs the process group.
import { Readable, type ReadableOptions } from 'node:stream';
import type { ExecHandle } from './client.ts';

export class PacedReadable extends Readable {
  /** The exec whose output this is; run it with `manualCredit: true`. */
  handle: ExecHandle | undefined;
  private owed = 0;

  constructor(opts: ReadableOptions) {
    super(opts);
  }

  /** Queues `item` (a chunk, or an event in object mode) that used `bytes` of the guest's credit. */
  deliver(item: unknown, bytes: number): void {
    this.owed += bytes;
    if (this.push(item)) this.credit();
  }

  private credit(): void {
    if (this.owed > 0 && this.handle) {
      this.handle.grant(this.owed);
      this.owed = 0;
    }
  }

  override _read(): void {
    this.credit();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.handle && !this.handle.settled) this.handle.signal(9);
    cb(err);
  }
}
