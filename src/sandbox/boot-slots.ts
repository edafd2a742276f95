// Admission for boots: at most `max` VMs start at once (cold boots, restores, pool fills, golden
// builds); the rest wait their turn in order, creates before background work, each create only
// until its deadline. A host that boots 40 VMs at once boots each of them slower than the boot
// timeout; a queue answers every create, in time or with a clear 503.
import { EmberdError } from '../errors.ts';

export type BootPriority = 'create' | 'background';

interface Waiter {
  priority: BootPriority;
  grant: () => void;
  fail: (e: Error) => void;
}

export interface BootSlotsView { max: number; running: number; queued: number }

/** A held slot: release() once the boot is over, whatever happened. */
export type BootSlot = { release(): void };

export class BootSlots {
  private readonly max: number;
  private running = 0;
  private readonly queue: Waiter[] = [];

  constructor(max: number) {
    this.max = max;
  }

  /**
   * A slot, at once or when one frees. A create waits at most `waitMs` (then 503 TOO_BUSY), and
   * stops waiting when `signal` aborts (the sandbox was deleted meanwhile).
   */
  acquire(priority: BootPriority, waitMs = Infinity, signal?: AbortSignal): Promise<BootSlot> {
    if (signal?.aborted) return Promise.reject(new EmberdError('SANDBOX_NOT_FOUND', 'the sandbox was deleted while it waited to boot'));
    if (this.running < this.max && this.queue.length === 0) return Promise.resolve(this.take());
    return new Promise<BootSlot>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const leave = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = this.queue.indexOf(w);
        if (i >= 0) this.queue.splice(i, 1);
      };
      const w: Waiter = {
        priority,
        grant: () => { leave(); resolve(this.take()); },
        fail: (e) => { leave(); reject(e); },
      };
      const onAbort = () => w.fail(new EmberdError('SANDBOX_NOT_FOUND', 'the sandbox was deleted while it waited to boot'));
      signal?.addEventListener('abort', onAbort, { once: true });
      if (Number.isFinite(waitMs)) {
        timer = setTimeout(() => w.fail(new EmberdError('TOO_BUSY', `${this.running} sandboxes are booting and ${this.queue.length} more creates wait (at most ${this.max} boot at once, --max-concurrent-boots); this one waited ${Math.round(waitMs / 1000)} s: retry later`, { retryAfterS: 2 })), waitMs);
      }
      // Creates go before background work (pool fills, golden snapshots), in arrival order.
      const at = priority === 'create' ? this.queue.findIndex((q) => q.priority === 'background') : -1;
      this.queue.splice(at < 0 ? this.queue.length : at, 0, w);
    });
  }

  view(): BootSlotsView {
    return { max: this.max, running: this.running, queued: this.queue.length };
  }

  private take(): BootSlot {
    this.running++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.running--;
        this.queue[0]?.grant();
      },
    };
  }
}
