// Warm pool: per pack and machine shape, sandboxes already booted (restored), warmed and
// handshaken, handed over by POST /sandboxes in the time of one HELLO. Its size follows demand:
// each shape keeps as many as were asked for in the last DEMAND_WINDOW_MS, never fewer than its
// minimum (--pool-size for the default shape, 0 for others) nor more than --pool-max. Refills run
// in parallel, at most `fillConcurrency` at once over all shapes (the host's cores: each fill is
// a VM restoring and warming), and waiting sandboxes beyond a shrunk target are discarded.
import type { Logger } from '../log.ts';
import type { Sandbox } from './sandbox.ts';

export interface PoolView { size: number; ready: number; filling: number }

export interface PoolBounds {
  /** Ready sandboxes kept per default-shape pack whatever the demand (--pool-size). */
  min: number;
  /** Ready sandboxes kept per pack and shape at most (--pool-max). */
  max: number;
  /** Fills running at once, over every pack and shape. */
  fillConcurrency: number;
  /** How far back creates count as demand (ms); also how long a grown pool stays grown. */
  windowMs?: number;
  /** How long after a hit its refill starts (ms; 0: at once). */
  refillDelayMs?: number;
}

/** How long a create counts as demand for its pack and shape. */
export const DEMAND_WINDOW_MS = 30_000;

/** How long after a pool hit its refill starts. */
export const REFILL_DELAY_MS = 300;

/** How often targets are recomputed without a create (so a grown pool shrinks back). */
const RETARGET_MS = 5_000;

interface Shape {
  ready: Sandbox[];
  filling: number;
  /** Times of recent creates (hits and misses), oldest first. */
  demand: number[];
  /** The pool's floor for this shape. */
  min: number;
  /** When a fill last failed: the periodic retarget leaves the shape alone for a while after. */
  failedAt: number;
}

/** After a failed fill, how long only a create (not the periodic retarget) starts another. */
const FAILED_FILL_BACKOFF_MS = 30_000;

export class WarmPool {
  private readonly bounds: Required<PoolBounds>;
  private readonly shapes = new Map<string, Shape>();
  private readonly fill: (key: string) => Promise<Sandbox>;
  private readonly discard: (sb: Sandbox) => Promise<void>;
  private readonly log: Logger;
  private readonly now: () => number;
  private closed = false;
  private running = 0;
  /** Keys waiting for a fill slot, one entry per sandbox wanted. */
  private readonly queue: string[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private readonly timer: NodeJS.Timeout;

  constructor(bounds: PoolBounds, fill: (key: string) => Promise<Sandbox>, discard: (sb: Sandbox) => Promise<void>, log: Logger, now: () => number = Date.now) {
    this.bounds = { windowMs: DEMAND_WINDOW_MS, refillDelayMs: REFILL_DELAY_MS, ...bounds, min: Math.min(bounds.min, bounds.max), fillConcurrency: Math.max(1, bounds.fillConcurrency) };
    this.fill = fill;
    this.discard = discard;
    this.log = log;
    this.now = now;
    this.timer = setInterval(() => this.retarget(), RETARGET_MS);
    this.timer.unref();
  }

  /** Keeps `key` (a pack in the default shape) at least at the minimum from now on. */
  keep(key: string): void {
    this.shape(key).min = this.bounds.min;
    this.refill(key);
  }

  /** `key` is no longer wanted (its pack was removed): no floor, no demand, nothing waiting. */
  drop(key: string): void {
    const s = this.shapes.get(key);
    if (!s) return;
    this.shapes.delete(key);
    for (let i = this.queue.length - 1; i >= 0; i--) if (this.queue[i] === key) this.queue.splice(i, 1);
    for (const sb of s.ready.splice(0)) void this.discard(sb);
  }

  /**
   * A ready sandbox of `key` (a pack and shape), if one is waiting. Either way the create counts
   * as demand and a refill starts.
   */
  take(key: string): Sandbox | undefined {
    const s = this.shape(key);
    s.demand.push(this.now());
    let sb: Sandbox | undefined;
    while ((sb = s.ready.shift()) && sb.state !== 'ready') void this.discard(sb); // died while waiting
    if (!sb || !this.bounds.refillDelayMs) this.refill(key);
    else {
      // A hit's refill waits a moment: a VM restoring at once takes the host's CPU from the
      // sandbox just handed over, whose first exec usually follows right away.
      const t = setTimeout(() => this.refill(key), this.bounds.refillDelayMs);
      t.unref();
    }
    return sb;
  }

  /** How many sandboxes `key` should hold now: its recent creates, within its bounds. */
  target(key: string): number {
    const s = this.shapes.get(key);
    if (!s) return 0;
    const since = this.now() - this.bounds.windowMs;
    while (s.demand.length && s.demand[0]! <= since) s.demand.shift();
    return Math.min(this.bounds.max, Math.max(s.min, s.demand.length));
  }

  /** Starts (or queues) fills until `key` has its target waiting or being made. */
  refill(key: string): void {
    if (this.closed) return;
    const s = this.shape(key);
    const queued = this.queue.filter((k) => k === key).length;
    for (let want = this.target(key) - s.ready.length - s.filling - queued; want > 0; want--) this.queue.push(key);
    this.pump();
  }

  /** Recomputes every shape's target: grows where demand came, discards the excess where it went. */
  retarget(): void {
    if (this.closed) return;
    for (const [key, s] of this.shapes) {
      const target = this.target(key);
      for (let i = this.queue.length - 1; i >= 0 && s.ready.length + s.filling + this.queue.filter((k) => k === key).length > target; i--) {
        if (this.queue[i] === key) this.queue.splice(i, 1);
      }
      while (s.ready.length > target) void this.discard(s.ready.pop()!);
      if (this.now() - s.failedAt >= FAILED_FILL_BACKOFF_MS) this.refill(key);
    }
  }

  /** Stops refilling and destroys every waiting sandbox; later fills are destroyed on arrival. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.queue.length = 0;
    const all = [...this.shapes.values()].flatMap((s) => s.ready.splice(0));
    await Promise.allSettled([...all.map((sb) => this.discard(sb)), ...this.inflight]);
  }

  view(): Record<string, PoolView> {
    const out: Record<string, PoolView> = {};
    for (const [key, s] of this.shapes) {
      out[key] = { size: this.target(key), ready: s.ready.filter((sb) => sb.state === 'ready').length, filling: s.filling };
    }
    return out;
  }

  private shape(key: string): Shape {
    let s = this.shapes.get(key);
    if (!s) this.shapes.set(key, s = { ready: [], filling: 0, demand: [], min: 0, failedAt: -Infinity });
    return s;
  }

  /** Runs queued fills while slots are free. */
  private pump(): void {
    while (!this.closed && this.running < this.bounds.fillConcurrency && this.queue.length) {
      const key = this.queue.shift()!;
      const s = this.shape(key);
      this.running++;
      s.filling++;
      const p: Promise<void> = this.fill(key)
        .then(async (sb) => {
          // Demand may have gone while it booted: keep it only if the shape still wants it.
          if (this.closed || s.ready.length >= this.target(key)) await this.discard(sb);
          else s.ready.push(sb);
        })
        .catch((e: Error) => {
          s.failedAt = this.now();
          this.log.warn({ pack: key }, `warm pool: could not prepare a ${key} sandbox: ${e.message}`);
        })
        .finally(() => {
          this.running--;
          s.filling--;
          this.inflight.delete(p);
          this.pump();
        });
      this.inflight.add(p);
    }
  }
}
