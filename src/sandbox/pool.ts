// Warm pool: per pack, a few sandboxes already booted (restored) and handshaken, handed over by
// POST /sandboxes in the time of one HELLO. Refilled in the background after every take.
import type { Logger } from '../log.ts';
import type { Sandbox } from './sandbox.ts';

export interface PoolView { size: number; ready: number; filling: number }

export class WarmPool {
  private readonly size: number;
  private readonly ready = new Map<string, Sandbox[]>();
  private readonly filling = new Map<string, number>();
  private readonly fill: (pack: string) => Promise<Sandbox>;
  private readonly discard: (sb: Sandbox) => Promise<void>;
  private readonly log: Logger;
  private closed = false;
  private readonly inflight = new Set<Promise<void>>();

  constructor(size: number, fill: (pack: string) => Promise<Sandbox>, discard: (sb: Sandbox) => Promise<void>, log: Logger) {
    this.size = size;
    this.fill = fill;
    this.discard = discard;
    this.log = log;
  }

  /** A ready sandbox of `pack`, if one is waiting; starts a refill either way. */
  take(pack: string): Sandbox | undefined {
    const list = this.ready.get(pack) ?? [];
    let sb: Sandbox | undefined;
    while ((sb = list.shift()) && sb.state !== 'ready') void this.discard(sb); // died while waiting
    this.refill(pack);
    return sb;
  }

  refill(pack: string): void {
    if (this.closed || this.size === 0) return;
    const list = this.ready.get(pack) ?? [];
    this.ready.set(pack, list);
    while (list.length + (this.filling.get(pack) ?? 0) < this.size) {
      this.filling.set(pack, (this.filling.get(pack) ?? 0) + 1);
      const p: Promise<void> = this.fill(pack)
        .then(async (sb) => {
          if (this.closed) await this.discard(sb);
          else list.push(sb);
        })
        .catch((e: Error) => this.log.warn({ pack }, `warm pool: could not prepare a ${pack} sandbox: ${e.message}`))
        .finally(() => {
          this.filling.set(pack, (this.filling.get(pack) ?? 1) - 1);
          this.inflight.delete(p);
        });
      this.inflight.add(p);
    }
  }

  /** Stops refilling and destroys every waiting sandbox; later fills are destroyed on arrival. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.ready.values()].flat();
    this.ready.clear();
    await Promise.allSettled([...all.map((sb) => this.discard(sb)), ...this.inflight]);
  }

  view(): Record<string, PoolView> {
    const out: Record<string, PoolView> = {};
    for (const pack of new Set([...this.ready.keys(), ...this.filling.keys()])) {
      out[pack] = { size: this.size, ready: this.ready.get(pack)?.filter((s) => s.state === 'ready').length ?? 0, filling: this.filling.get(pack) ?? 0 };
    }
    return out;
  }
}
