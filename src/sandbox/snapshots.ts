// Golden snapshots: one saved, booted-and-idle VM per language pack, from which sandboxes are
// restored instead of cold-booted. Keyed by a hash of everything the saved state depends on, so
// any change of kernel, initramfs, pack, machine size or VMM makes a new one.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.ts';
import type { MachineConfig } from '../vmm/backend.ts';

export interface SnapshotInputs {
  /** The backend's SnapshotSupport.fingerprint (VMM, version, acceleration, format). */
  vmm: string;
  kernelSha256: string;
  initramfsSha256: string;
  packSha256: string;
  machine: { vcpus: number; memoryMib: number };
}

export type SnapshotStatus = 'missing' | 'building' | 'ready' | 'failed';

export interface SnapshotView {
  status: SnapshotStatus;
  key: string;
  bytes: number | null;
  build_ms: number | null;
  error: string | null;
}

interface Entry {
  key: string;
  vmm: string;
  status: SnapshotStatus;
  building?: Promise<void>;
  bytes?: number;
  buildMs?: number;
  error?: string;
}

/** Builds golden VM `name` into `dir` (which it creates); returns the state's size. */
export type GoldenBuilder = (name: string, dir: string) => Promise<{ bytes: number }>;

/**
 * The name of a pack's golden snapshot for one machine shape: the pack's name for the daemon's
 * default shape, `pack@VCPUSxMIB` for another (--snapshot-shapes). A VM restores only from the
 * snapshot of exactly its shape.
 */
export function goldenName(pack: string, machine: MachineConfig, defaults: MachineConfig): string {
  return machine.vcpus === defaults.vcpus && machine.memoryMib === defaults.memoryMib ? pack : `${pack}@${machine.vcpus}x${machine.memoryMib}`;
}

const META = 'meta.json';

export function snapshotKey(inputs: SnapshotInputs): string {
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 32);
}

export class SnapshotStore {
  private readonly entries = new Map<string, Entry>();
  private readonly base: string;
  private readonly build: GoldenBuilder;
  private readonly log: Logger;

  constructor(base: string, inputs: Map<string, SnapshotInputs>, build: GoldenBuilder, log: Logger) {
    this.base = base;
    this.build = build;
    this.log = log;
    this.sync(inputs);
  }

  /**
   * The goldens there should be now (the packs changed): new names get an entry (a snapshot on
   * disk with their key is ready at once), names whose inputs changed get the new key, names no
   * longer wanted are forgotten. Nothing is built here; ensure() does that.
   */
  sync(inputs: Map<string, SnapshotInputs>): void {
    for (const name of [...this.entries.keys()]) if (!inputs.has(name)) this.entries.delete(name);
    for (const [name, inp] of inputs) {
      const key = snapshotKey(inp);
      if (this.entries.get(name)?.key === key) continue;
      const meta = this.readMeta(key);
      this.entries.set(name, meta ? { key, vmm: inp.vmm, status: 'ready', bytes: meta.bytes, buildMs: meta.build_ms } : { key, vmm: inp.vmm, status: 'missing' });
    }
  }

  /** The state of golden `name`, if there is such a golden. */
  viewOf(name: string): SnapshotView | undefined {
    return this.view()[name];
  }

  /** The directory to restore `pack` from, if its golden snapshot is ready. */
  usable(pack: string): string | undefined {
    const e = this.entries.get(pack);
    return e?.status === 'ready' ? this.dirOf(e.key) : undefined;
  }

  /** Builds the pack's snapshot unless it is ready; concurrent callers share one build. */
  ensure(pack: string): Promise<void> {
    const e = this.entries.get(pack);
    if (!e || e.status === 'ready') return Promise.resolve();
    e.building ??= (async () => {
      e.status = 'building';
      const dir = this.dirOf(e.key);
      const tmp = `${dir}.tmp-${process.pid}`;
      const t0 = Date.now();
      try {
        rmSync(tmp, { recursive: true, force: true });
        const { bytes } = await this.build(pack, tmp);
        e.buildMs = Date.now() - t0;
        writeFileSync(join(tmp, META), JSON.stringify({ key: e.key, vmm: e.vmm, pack, bytes, build_ms: e.buildMs, created: new Date().toISOString() }));
        rmSync(dir, { recursive: true, force: true });
        renameSync(tmp, dir);
        Object.assign(e, { status: 'ready', bytes, error: undefined });
        this.log.info({ pack, bytes, build_ms: e.buildMs }, `snapshot of pack ${pack} ready (${(bytes / 1048576).toFixed(1)} MiB, built in ${e.buildMs} ms)`);
      } catch (err) {
        rmSync(tmp, { recursive: true, force: true });
        Object.assign(e, { status: 'failed', error: (err as Error).message });
        this.log.warn({ pack }, `snapshot of pack ${pack} failed, sandboxes cold-boot meanwhile: ${(err as Error).message}`);
      } finally {
        e.building = undefined;
      }
    })();
    return e.building;
  }

  /** A snapshot that failed to restore: drop it and build it again in the background. */
  invalidate(pack: string, reason: string): void {
    const e = this.entries.get(pack);
    if (!e || e.status !== 'ready') return;
    this.log.warn({ pack }, `snapshot of pack ${pack} failed to restore (${reason}); rebuilding it`);
    rmSync(this.dirOf(e.key), { recursive: true, force: true });
    e.status = 'missing';
    void this.ensure(pack);
  }

  /**
   * Removes this VMM's snapshots that no pack uses any more (older kernels, packs, machine sizes).
   * Snapshots of other VMMs (another backend, version or acceleration sharing the images dir) and
   * builds in progress are left alone.
   */
  prune(): number {
    if (!existsSync(this.base)) return 0;
    const keep = new Set([...this.entries.values()].map((e) => e.key));
    const mine = new Set([...this.entries.values()].map((e) => e.vmm));
    let n = 0;
    for (const name of readdirSync(this.base)) {
      if (keep.has(name)) continue;
      const builder = /\.tmp-(\d+)$/.exec(name);
      if (builder && isAlive(Number(builder[1]))) continue; // another daemon is building it
      let vmm: unknown;
      try { vmm = JSON.parse(readFileSync(join(this.base, name, META), 'utf8')).vmm; } catch { vmm = undefined; }
      if (typeof vmm === 'string' && !mine.has(vmm)) continue;
      rmSync(join(this.base, name), { recursive: true, force: true });
      n++;
    }
    return n;
  }

  view(): Record<string, SnapshotView> {
    const out: Record<string, SnapshotView> = {};
    for (const [pack, e] of this.entries) {
      out[pack] = { status: e.status, key: e.key, bytes: e.bytes ?? null, build_ms: e.buildMs ?? null, error: e.error ?? null };
    }
    return out;
  }

  private dirOf(key: string): string {
    mkdirSync(this.base, { recursive: true });
    return join(this.base, key);
  }

  private readMeta(key: string): { bytes: number; build_ms: number } | undefined {
    try {
      const m = JSON.parse(readFileSync(join(this.base, key, META), 'utf8'));
      return m.key === key && existsSync(join(this.base, key)) ? m : undefined;
    } catch {
      return undefined;
    }
  }
}

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}
