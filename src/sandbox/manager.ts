// The sandbox manager: the registry of live sandboxes and every operation on them. This is the
// public interface the HTTP layer drives: each route validates its input and makes exactly one
// call here. How a VM comes up and goes away is launcher.ts; what runs inside is the agent
// client, files/, processes.ts and sessions.ts. This module never sees HTTP.
import type { Egress, EgressRequest, EgressTotals } from './egress/egress.ts';
import { availableParallelism } from 'node:os';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ExecRequest, ExecResult } from '../agent/client.ts';
import type { PortConnection } from '../agent/port-channel.ts';
import type { PortView } from './ports.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Backend, MachineConfig } from '../vmm/backend.ts';
import { ExecEventStream } from './exec-stream.ts';
import { SandboxFiles, type FileStat } from './files.ts';
import { newSandboxId } from './ids.ts';
import { BootSlots, type BootPriority, type BootSlot, type BootSlotsView } from './boot-slots.ts';
import { EndedSandboxes } from './ended.ts';
import { settlesWithin } from '../settles-within.ts';
import { memAvailableMib } from './host-memory.ts';
import { Launcher, hostnameOf, type GuestState, type PackImage } from './launcher.ts';
import { SAVED_FORMAT, SavedStore, VM_DIR, fromSavedAgent, toSavedAgent, type SavedFiles, type SavedSandbox } from './saved.ts';
import type { ExecKind, ExecOutcome, SandboxObserver } from './observer.ts';
import { WarmPool, type PoolView } from './pool.ts';
import type { BackgroundProcess, ProcessOutput, StreamName } from './processes.ts';
import { Sandbox, helloLimits, type GuestLimits } from './sandbox.ts';
import { SessionEventStream } from './session-stream.ts';
import { PtySession, type PtyOptions } from './pty.ts';
import type { SessionInfo, SessionResult } from './sessions.ts';
import { SnapshotStore, goldenName, type SnapshotInputs, type SnapshotView } from './snapshots.ts';
import type { BrokenPack } from '../images/manifest.ts';

export type { PackImage } from './launcher.ts';

/** How sandboxes are made: the daemon's --default-pack, --vcpus, --memory, ... */
export interface SandboxOptions {
  defaultPack: string;
  /** The default machine shape (--vcpus, --memory). */
  machine: MachineConfig;
  /** The largest shape a create may ask (--max-vcpus, --max-memory). */
  maxVcpus: number;
  maxMemoryMib: number;
  /** Guest limits when a create names none (--disk, --pids-max); undefined: the guest's own default. */
  diskMib?: number;
  pidsMax?: number;
  /** The largest disk_mib a create may ask (--max-disk). */
  maxDiskMib: number;
  bootTimeoutMs: number;
  /** Live sandboxes at once (--max-sandboxes). */
  max: number;
  /** Ready sandboxes kept per pack whatever the demand (the pool's floor); 0 with poolMax 0 disables the warm pool. */
  poolSize: number;
  /** Ready sandboxes kept per pack and machine shape at most, however high the demand (default: poolSize). */
  poolMax?: number;
  /** Pool fills at once over all packs and shapes (default: the host's cores). */
  poolFillConcurrency?: number;
  /** A sandbox's life when its create names none, in seconds (--sandbox-timeout); 0: no deadline. */
  timeoutS: number;
  /** The longest timeout_s a create or POST .../timeout may ask (--max-sandbox-timeout); 0: no limit, and 0 (none) allowed. */
  maxTimeoutS: number;
}

/** One golden snapshot: a pack in a machine shape, and what its saved state depends on. */
export interface GoldenSpec { pack: string; machine: MachineConfig; inputs: SnapshotInputs }

/** A pack as GET /packs shows it. */
export interface PackView {
  name: string;
  description: string | null;
  custom: boolean;
  size: number | null;
  sha256: string | null;
  /** argv prefix `code` runs with */
  interpreter: string[] | null;
  env: Record<string, string>;
  /** its default-shape golden snapshot (null: snapshots off) */
  snapshot: SnapshotView | null;
  /** why it cannot be used (null: it can) */
  error: string | null;
}

/** What a host accepts before it refuses or queues creates (--max-concurrent-boots, ...). */
export interface AdmissionOptions {
  /** VMs that boot (cold, restore, pool fill, golden) at once. */
  maxConcurrentBoots: number;
  /** How long a create waits for a boot slot before 503 TOO_BUSY. */
  queueTimeoutMs: number;
  /** MiB of host memory a create must leave available (MemAvailable minus the new guest's memory). */
  memoryReserveMib: number;
}

/** What POST /sandboxes may ask for. */
export interface CreateOptions {
  pack?: string;
  vcpus?: number;
  memoryMib?: number;
  /** Variables every exec of the sandbox inherits (an exec's own env wins). */
  env?: Record<string, string>;
  /** The writable disk, in MiB. */
  diskMib?: number;
  /** The most processes and threads the sandbox's execs may have (0: the guest's ceiling). */
  pidsMax?: number;
  /** Seconds until the sandbox is destroyed; 0: never (only when the daemon allows it). */
  timeoutS?: number;
  /** Egress to these destinations only (docs/network.md "Egress"); absent: no network device at all. */
  network?: EgressRequest;
  /** At the deadline: destroy (default) or pause. */
  onTimeout?: 'destroy' | 'pause';
  /** Calls on a paused sandbox resume it first (default); false: they answer 409 SANDBOX_PAUSED. */
  autoResume?: boolean;
}

/** Paused sandboxes (--paused-dir under the state dir, --paused-retention, --paused-disk-max). */
export interface PausedOptions {
  dir: string;
  /** Seconds a paused sandbox is kept before it is deleted; 0: forever. */
  retentionS: number;
  /** MiB the saved VMs may take together; a pause beyond it is refused. */
  diskMaxMib: number;
}

/** Exec limits: --exec-timeout, --exec-max-timeout, --exec-output-cap. */
export interface ExecLimits {
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  /** stdout + stderr bytes kept per exec (and per background process, session cell). */
  outputCap: number;
}

export interface ManagerConfig {
  backend: Backend;
  images: { kernel: string; initramfs: string; packs: Map<string, PackImage>; brokenPacks?: BrokenPack[] };
  /** Per-sandbox run dirs go under it. */
  runBase: string;
  sandboxes: SandboxOptions;
  exec: ExecLimits;
  /** The largest upload accepted, in bytes (--max-upload). */
  maxUploadBytes: number;
  /**
   * Golden snapshots (when the backend supports them), by golden name (snapshots.ts goldenName):
   * each pack in the default shape and in every --snapshot-shapes shape. Absent: always cold boot.
   */
  snapshots?: { dir: string; goldens: Map<string, GoldenSpec> };
  admission: AdmissionOptions;
  /** The host's available memory in MiB (tests give their own). */
  hostMemoryMib?: () => number;
  /** Told of creates, execs and VM exits (the daemon's metrics). */
  observer?: SandboxObserver;
  /** Where paused sandboxes are kept; absent: pause, resume and fork are unavailable. */
  paused?: PausedOptions;
  /** What shutdown() does with running sandboxes (--on-shutdown). */
  onShutdown?: 'destroy' | 'pause';
  /** Sandbox networks (creates with `network`); absent: such creates are refused (EGRESS_UNAVAILABLE). */
  egress?: Egress;
  log: Logger;
}

export interface ExecParams {
  code?: string;
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: Buffer;
  timeoutMs?: number;
}

export interface SessionParams {
  code: string;
  stdin?: Buffer;
  timeoutMs?: number;
}

export interface AdmissionView {
  boots: BootSlotsView;
  memory_reserve_mib: number;
  host_available_mib: number;
}

/** Seconds until the first of these sandboxes expires (a slot frees then), within 1..60; else 5. */
function retryAfterExpiry(live: Sandbox[]): number {
  const next = Math.min(...live.map((s) => s.expiresAt?.getTime() ?? Infinity));
  return Number.isFinite(next) ? Math.min(60, Math.max(1, Math.ceil((next - Date.now()) / 1000))) : 5;
}

/** The smallest guest that boots: at 64 MiB the Debian kernel runs out of memory before PID 1. */
export const MIN_MEMORY_MIB = 128;

/** The longest lifetime a timer can hold (setTimeout's 2^31 ms is ~24.8 days), in seconds. */
export const LONGEST_TIMEOUT_S = 2_000_000;

/** How long a guest gets to power off by itself after SHUTDOWN before the VMM is told to quit. */
const SHUTDOWN_GRACE_MS = 2000;

/** The most forks one call makes. */
export const MAX_FORKS = 16;

/** How long the guest may take to connect to a port on 127.0.0.1 (a refusal is immediate). */
const PORT_CONNECT_TIMEOUT_MS = 10_000;

/** A forced pause (at the deadline, at shutdown) waits this long for the execs it kills to end. */
const FORCED_PAUSE_WAIT_MS = 5000;

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly cfg: ManagerConfig;
  private readonly log: Logger;
  private shuttingDown = false;
  private readonly snapshots: SnapshotStore | undefined;
  private readonly pool: WarmPool | undefined;
  private readonly launcher: Launcher;
  /** What each warm-pool key (goldenName: a pack and shape) stands for. */
  private readonly poolShapes = new Map<string, { pack: string; machine: MachineConfig }>();
  /** Deleted sandboxes whose VM is still being stopped (DELETE does not wait for it). */
  private readonly tearingDown = new Set<Sandbox>();
  /** VMs booted to become golden snapshots, so shutdown can stop them too. */
  private readonly goldens = new Set<Sandbox>();
  /** The packs sandboxes can be made of now, those that could not be loaded, and the goldens (updatePacks changes them). */
  private packs: Map<string, PackImage>;
  private brokenPacks: BrokenPack[] = [];
  private goldenSpecs: Map<string, GoldenSpec>;
  /** Ids that ended recently, for a 404 that says how. */
  private readonly ended = new EndedSandboxes();
  private readonly slots: BootSlots;
  private readonly hostMemoryMib: () => number;
  private readonly saved: SavedStore | undefined;
  private forks = 0;

  constructor(cfg: ManagerConfig) {
    this.cfg = cfg;
    this.log = cfg.log;
    this.packs = new Map(cfg.images.packs);
    this.brokenPacks = cfg.images.brokenPacks ?? [];
    this.goldenSpecs = new Map(cfg.snapshots?.goldens ?? []);
    this.slots = new BootSlots(cfg.admission.maxConcurrentBoots);
    this.hostMemoryMib = cfg.hostMemoryMib ?? memAvailableMib;
    if (cfg.paused && cfg.backend.snapshots) this.saved = new SavedStore(cfg.paused.dir);
    if (cfg.snapshots && cfg.backend.snapshots) {
      const inputs = new Map([...cfg.snapshots.goldens].map(([name, g]) => [name, g.inputs]));
      this.snapshots = new SnapshotStore(cfg.snapshots.dir, inputs, (name, dir) => this.buildGolden(name, dir), this.log.child({ component: 'snapshots' }));
    }
    this.launcher = new Launcher({
      backend: cfg.backend,
      kernel: cfg.images.kernel,
      initramfs: cfg.images.initramfs,
      machine: cfg.sandboxes.machine,
      bootTimeoutMs: cfg.sandboxes.bootTimeoutMs,
      observer: cfg.observer,
    }, this.snapshots);
    const poolMax = Math.max(cfg.sandboxes.poolMax ?? cfg.sandboxes.poolSize, cfg.sandboxes.poolSize);
    if (poolMax) {
      const discard = (sb: Sandbox) => {
        this.launcher.stopReason(sb, this.shuttingDown ? 'shutdown' : 'pool_discarded');
        return this.launcher.release(sb, 0).then(() => { sb.state = 'gone'; });
      };
      const bounds = { min: cfg.sandboxes.poolSize, max: poolMax, fillConcurrency: cfg.sandboxes.poolFillConcurrency ?? availableParallelism() };
      this.pool = new WarmPool(bounds, (key) => this.prepare(key), discard, this.log.child({ component: 'pool' }));
    }
  }

  get config(): Readonly<ManagerConfig> {
    return this.cfg;
  }

  /** Background work after start-up: golden snapshots first, then the warm pool from them. */
  start(): void {
    this.loadPaused();
    const pruned = this.snapshots?.prune() ?? 0;
    if (pruned) this.log.info({ pruned }, `removed ${pruned} outdated snapshots`);
    if (this.pool) for (const pack of this.packs.keys()) this.keepPooled(pack);
    for (const name of this.goldenSpecs.keys()) void this.snapshots?.ensure(name);
  }

  /** Snapshot, pool and admission state, for GET /. */
  status(): { snapshots: Record<string, SnapshotView> | null; pool: Record<string, PoolView> | null; admission: AdmissionView } {
    return {
      snapshots: this.snapshots?.view() ?? null,
      pool: this.pool?.view() ?? null,
      admission: { boots: this.slots.view(), memory_reserve_mib: this.cfg.admission.memoryReserveMib, host_available_mib: this.hostMemoryMib() },
    };
  }

  // ---- packs ----------------------------------------------------------------------------------

  /**
   * The packs changed on disk (SIGHUP, or a pack built or imported while the daemon runs): from
   * now on creates see `packs`; each new or rebuilt pack gets its golden snapshot on first use.
   * Running sandboxes keep what they booted from. `broken` packs are listed with their reason.
   */
  updatePacks(packs: Map<string, PackImage>, broken: BrokenPack[], goldens: Map<string, GoldenSpec>): { added: string[]; removed: string[]; changed: string[] } {
    const added = [...packs.keys()].filter((n) => !this.packs.has(n));
    const removed = [...this.packs.keys()].filter((n) => !packs.has(n));
    const changed = [...packs.keys()].filter((n) => this.packs.has(n) && this.packs.get(n)!.sha256 !== packs.get(n)!.sha256);
    this.packs = new Map(packs);
    this.brokenPacks = broken;
    this.goldenSpecs = new Map(goldens);
    this.snapshots?.sync(new Map([...goldens].map(([name, g]) => [name, g.inputs])));
    if (this.pool) {
      for (const pack of added) this.keepPooled(pack);
      for (const [key, shape] of this.poolShapes) if (removed.includes(shape.pack)) { this.pool.drop(key); this.poolShapes.delete(key); }
    }
    return { added, removed, changed };
  }

  /** Every pack, usable or broken, for GET /packs. */
  listPacks(): PackView[] {
    const usable = [...this.packs.values()].map((p): PackView => ({
      name: p.name,
      description: p.description ?? null,
      custom: p.custom ?? false,
      size: p.size ?? null,
      sha256: p.sha256 ?? null,
      interpreter: p.interpreter ?? null,
      env: p.env ?? {},
      snapshot: this.snapshots?.viewOf(p.name) ?? null,
      error: null,
    }));
    const broken = this.brokenPacks.map((b): PackView => ({
      name: b.name, description: null, custom: false, size: null, sha256: null, interpreter: null, env: {}, snapshot: null, error: b.error,
    }));
    return [...usable, ...broken].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Names of the packs creates can use now. */
  packNames(): string[] {
    return [...this.packs.keys()];
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  /** The sandbox `id` in any state; SANDBOX_NOT_FOUND for anything that names none. */
  get(id: string): Sandbox {
    const sb = this.sandboxes.get(id);
    if (!sb) {
      throw new EmberdError('SANDBOX_NOT_FOUND', this.ended.explain(id)
        ?? `sandbox ${id} does not exist (it was deleted, or never created on this daemon; ids look like sb_ and 20 lowercase letters and digits); list sandboxes with GET /sandboxes`);
    }
    return sb;
  }

  /** Boots a VM and resolves once its agent has answered the handshake. */
  async create(o: CreateOptions = {}): Promise<Sandbox> {
    const t0 = performance.now();
    try {
      const sb = await this.createSandbox(o);
      this.cfg.observer?.sandboxCreated(sb.bootMode!, sb.pack, (performance.now() - t0) / 1000);
      return sb;
    } catch (e) {
      this.cfg.observer?.createFailed(isEmberdError(e) ? e.code : 'INTERNAL');
      throw e;
    }
  }

  private async createSandbox(o: CreateOptions): Promise<Sandbox> {
    if (this.shuttingDown) throw new EmberdError('SHUTTING_DOWN', 'emberd is shutting down; retry against a running daemon');
    const timeoutS = this.checkLifetime(o.timeoutS ?? this.cfg.sandboxes.timeoutS);
    const machine = this.checkMachine(o);
    const limits = this.checkLimits(o);
    const env = o.env ?? {};
    const name = o.pack ?? this.cfg.sandboxes.defaultPack;
    const pack = this.packs.get(name);
    if (!pack) {
      const broken = this.brokenPacks.find((b) => b.name === name);
      if (broken) throw new EmberdError('PACK_BROKEN', `language pack "${name}" cannot be used: ${broken.error}`);
      throw new EmberdError('UNKNOWN_LANGUAGE_PACK', `language pack "${name}" is not available; available packs: ${[...this.packs.keys()].join(', ')} (GET /packs lists them)`);
    }
    const live = this.running();
    if (live.length >= this.cfg.sandboxes.max) {
      throw new EmberdError('TOO_MANY_SANDBOXES', `this daemon already runs ${live.length} sandboxes (the limit is ${this.cfg.sandboxes.max}); delete some or start emberd with a higher --max-sandboxes`, { retryAfterS: retryAfterExpiry(live) });
    }
    if (o.onTimeout === 'pause' && !this.saved) throw this.noPause();
    if (o.network) this.checkEgress();
    // The pool's VMs have no network device: a sandbox with `network` boots its own.
    const pooled = o.network ? undefined : await this.takeFromPool(name, machine, env, limits);
    if (pooled) {
      pooled.onTimeout = o.onTimeout ?? 'destroy';
      pooled.autoResume = o.autoResume ?? true;
      this.setLifetime(pooled, timeoutS);
      return pooled;
    }
    this.checkHostMemory(machine.memoryMib);
    // A pack whose golden is not made yet (a new pack, a listed shape) gets it now, for the next create.
    void this.snapshots?.ensure(goldenName(name, machine, this.cfg.sandboxes.machine));
    const sb = this.newSandbox(name, machine, { ...pack.env, ...env }, limits);
    sb.onTimeout = o.onTimeout ?? 'destroy';
    sb.autoResume = o.autoResume ?? true;
    this.sandboxes.set(sb.id, sb);
    sb.created = this.withEgress(sb, o.network).then(() => (sb.state === 'creating' ? this.boot(sb, pack, 'create') : undefined));
    await sb.created;
    if (sb.state !== 'ready') {
      // The client never learns a failed create's id: nothing of it may stay behind.
      this.sandboxes.delete(sb.id);
      if (sb.refusal) throw sb.refusal;
      throw new EmberdError((sb.failure?.code as 'BOOT_FAILED') ?? 'BOOT_FAILED', sb.failure?.message ?? 'the sandbox failed to start');
    }
    this.setLifetime(sb, timeoutS);
    sb.log.info({ boot_mode: sb.bootMode, boot_ms: sb.view().boot_ms, expires_at: sb.view().expires_at }, 'sandbox ready');
    return sb;
  }

  /** A new deadline: now + timeoutS (0: none, if the daemon allows it). */
  async setTimeout(id: string, timeoutS: number): Promise<Sandbox> {
    const sb = this.get(id);
    if (sb.state === 'destroying' || sb.state === 'gone') throw new EmberdError('SANDBOX_NOT_READY', `sandbox ${sb.id} is being destroyed`);
    const t = this.checkLifetime(timeoutS);
    if (sb.state === 'paused' || sb.state === 'pausing') { sb.timeoutS = t; return sb; } // armed again on resume
    this.setLifetime(sb, t);
    return sb;
  }

  /**
   * Forgets the sandbox at once (later calls on its id are 404, a second DELETE too) and ends its
   * VM in the background: the caller does not wait for the guest's shutdown. The teardown holds
   * no boot slot and no --max-sandboxes place, and its memory counts as free for the next create,
   * so no create is refused because one is still running. `torndown()` waits for it.
   */
  async destroy(id: string, reason: 'deleted' | 'expired' = 'deleted'): Promise<void> {
    const sb = this.get(id);
    clearTimeout(sb.expiryTimer);
    this.launcher.stopReason(sb, this.shuttingDown ? 'shutdown' : reason);
    if (sb.state === 'ready') sb.state = 'destroying';
    this.sandboxes.delete(sb.id);
    this.ended.record(sb.id, { reason, at: new Date(), timeoutS: sb.timeoutS });
    this.tearingDown.add(sb);
    sb.destroying ??= (async () => {
      await sb.transition?.catch(() => {});
      clearTimeout(sb.paused?.timer);
      sb.paused = undefined;
      this.saved?.remove(sb.id); // its saved state, or the boot files a resumed or forked VM came from
      if (sb.state === 'creating') {
        sb.cancelled = true;
        sb.abort.abort(); // a create waiting for a boot slot stops waiting
        sb.agent?.close(); // a pending handshake fails at once
        await sb.created;
      }
      await this.launcher.release(sb, SHUTDOWN_GRACE_MS);
      sb.state = 'gone';
      sb.log.info({ reason }, reason === 'expired' ? 'sandbox expired and was destroyed' : 'sandbox destroyed');
    })().catch((e: Error) => sb.log.error(`teardown failed: ${e.message}`)).finally(() => this.tearingDown.delete(sb));
  }

  /** Resolves once every background teardown begun so far has ended (its VM gone, its dir removed). */
  async torndown(): Promise<void> {
    await Promise.allSettled([...this.tearingDown].map((sb) => sb.destroying));
  }

  /** Destroys every sandbox; used on SIGINT/SIGTERM. */
  async shutdown(): Promise<void> {
    if (this.cfg.onShutdown === 'pause' && this.saved) {
      // Paused sandboxes are resumable by the next daemon; they leave the registry (not destroyed).
      await Promise.allSettled(this.list().filter((sb) => sb.state === 'ready').map((sb) => this.pause(sb.id, { force: true }).catch((e: Error) => {
        sb.log.warn(`could not pause at shutdown (it is destroyed): ${e.message}`);
      })));
      for (const sb of this.list()) if (sb.state === 'paused') { clearTimeout(sb.paused?.timer); this.sandboxes.delete(sb.id); }
    }
    this.shuttingDown = true;
    for (const sb of this.list()) if (sb.state === 'paused' || (sb.state === 'failed' && sb.paused)) { clearTimeout(sb.paused?.timer); this.sandboxes.delete(sb.id); }
    await Promise.allSettled([
      ...this.list().map((sb) => this.destroy(sb.id)),
      this.torndown(),
      this.pool?.close(),
      ...[...this.goldens].map((sb) => this.launcher.discardVm(sb)),
    ]);
    await this.cfg.egress?.close();
  }

  // ---- pause, resume, fork (docs/snapshots.md, "Pause and resume") ----------------------------

  /**
   * Saves the whole sandbox (memory with its tmpfs files, devices, processes, sessions) into the
   * paused store and ends its VM: no CPU, no memory, until resume. Refused while something runs
   * in the foreground (an exec, a file transfer, a terminal, a session cell): SANDBOX_BUSY; with
   * `force` (the deadline, --on-shutdown pause) those are killed and busy sessions ended first.
   * Background processes keep running afterwards, their output kept.
   */
  async pause(id: string, o: { force?: boolean } = {}): Promise<Sandbox> {
    const sb = this.get(id);
    const store = this.pauseStore();
    await sb.transition?.catch(() => {});
    if (sb.state === 'paused') return sb;
    this.checkReady(sb);
    if (this.cfg.paused!.diskMaxMib > 0) {
      const used = Math.round(store.bytes() / 1048576);
      if (used >= this.cfg.paused!.diskMaxMib) {
        throw new EmberdError('PAUSED_DISK_FULL', `paused sandboxes already take ${used} MiB of the ${this.cfg.paused!.diskMaxMib} MiB budget (--paused-disk-max); delete or resume some first`);
      }
    }
    await this.quiesce(sb, o.force ?? false);
    sb.state = 'pausing';
    sb.ports.endConnections(); // host sockets cannot be saved; the ports stay exposed
    clearTimeout(sb.expiryTimer);
    const t0 = performance.now();
    const run = (async () => {
      const { dir, vmDir } = store.prepare(sb.id, this.bootFilesOf(sb));
      try {
        const { bytes, guest } = await this.launcher.saveLive(sb, vmDir, { keepRunning: false, shared: false });
        // Its network is built again at resume: a paused sandbox holds no netns, tap or resolver.
        await sb.egress?.close();
        sb.egress = undefined;
        const pauseMs = Math.round(performance.now() - t0);
        store.commit(dir, this.record(sb, guest, bytes, pauseMs));
        sb.paused = { dir, pausedAt: new Date(), bytes, pauseMs, expiresAt: undefined };
        sb.state = 'paused';
        this.keepPaused(sb);
        sb.log.info({ bytes, pause_ms: pauseMs }, 'sandbox paused');
      } catch (e) {
        rmSync(dir, { recursive: true, force: true });
        if (sb.state === 'pausing') sb.state = sb.vm ? 'ready' : 'failed';
        if (sb.state === 'ready') this.setLifetime(sb, sb.timeoutS ?? 0);
        throw isEmberdError(e) ? new EmberdError(e.code === 'AGENT_TIMEOUT' ? 'AGENT_TIMEOUT' : 'PAUSE_FAILED', `could not pause sandbox ${sb.id}: ${e.message}`) : e;
      }
    })();
    sb.transition = run;
    try { await run; } finally { if (sb.transition === run) sb.transition = undefined; }
    return sb;
  }

  /**
   * Brings a paused sandbox back as it was (its files, sessions and background processes), with
   * the clock set from the host and fresh entropy; its lifetime is armed again (timeout_s, or
   * the one it had). SAVED_STATE_INCOMPATIBLE / SAVED_STATE_CORRUPT when it cannot be.
   */
  async resume(id: string, o: { timeoutS?: number } = {}): Promise<Sandbox> {
    const sb = this.get(id);
    if (o.timeoutS !== undefined) sb.timeoutS = this.checkLifetime(o.timeoutS);
    await sb.transition?.catch(() => {});
    if (sb.state === 'ready') {
      if (o.timeoutS !== undefined) this.setLifetime(sb, sb.timeoutS!);
      return sb;
    }
    if (sb.state !== 'paused' || !sb.paused) return this.checkReady(sb);
    await this.resumePaused(sb);
    return sb;
  }

  /**
   * N new sandboxes, each from this sandbox's state at this moment (memory, files, sessions,
   * background processes), each with its own id, hostname and entropy; the parent goes on. Where
   * the backend shares memory, the forks map one saved image copy-on-write.
   */
  async fork(id: string, count: number): Promise<Sandbox[]> {
    const parent = this.get(id);
    const store = this.pauseStore();
    if (!Number.isInteger(count) || count < 1 || count > MAX_FORKS) {
      throw new EmberdError('INVALID_REQUEST', `count must be 1 to ${MAX_FORKS}; fork in several calls for more`);
    }
    if (!this.cfg.backend.snapshots?.keepsConnections) {
      throw new EmberdError('PAUSE_UNSUPPORTED', `the ${this.cfg.backend.name} backend resets the guest's connections at every snapshot, so a running sandbox cannot be forked here (pause and resume keep its memory and files)`);
    }
    if (parent.state === 'paused') await this.resume(parent.id);
    await parent.transition?.catch(() => {});
    this.checkReady(parent);
    const live = this.running();
    if (live.length + count > this.cfg.sandboxes.max) {
      throw new EmberdError('TOO_MANY_SANDBOXES', `${count} forks would make ${live.length + count} sandboxes (the limit is ${this.cfg.sandboxes.max}); delete some or start emberd with a higher --max-sandboxes`, { retryAfterS: retryAfterExpiry(live) });
    }
    this.checkHostMemory(parent.machine.memoryMib * count);
    if (parent.egressRequest) this.checkEgress();
    await this.quiesce(parent, false);
    const { dir, vmDir, files: kept } = store.prepare(`sb_fork${process.pid}x${this.forks++}`, this.bootFilesOf(parent));
    const shared = count > 1 && !!this.cfg.backend.snapshots?.prepareShared;
    const forks: Sandbox[] = [];
    try {
      parent.state = 'pausing';
      let guest: GuestState;
      try {
        ({ guest } = await this.launcher.saveLive(parent, vmDir, { keepRunning: true, shared }));
      } finally {
        if (parent.state === 'pausing') parent.state = parent.vm ? 'ready' : 'failed';
      }
      for (let i = 0; i < count; i++) {
        const sb = this.newSandbox(parent.pack, parent.machine, { ...parent.env }, { ...parent.limits });
        sb.bootFiles = store.prepare(sb.id, kept).files;
        sb.forkedFrom = parent.id;
        sb.egressRequest = parent.egressRequest; // each fork gets a network of its own
        sb.onTimeout = parent.onTimeout;
        sb.autoResume = parent.autoResume;
        sb.state = 'resuming';
        this.sandboxes.set(sb.id, sb);
        forks.push(sb);
      }
      // One at a time within the boot slots, each a restore (of shared memory when there is one).
      await Promise.all(forks.map(async (sb) => {
        const slot = await this.slots.acquire('create', this.cfg.admission.queueTimeoutMs);
        try {
          await this.reopenEgress(sb);
          await this.launcher.resumeSaved(sb, sb.bootFiles!, vmDir, guest, 'fork');
          sb.state = 'ready';
          sb.readyAt = new Date();
          this.setLifetime(sb, parent.timeoutS ?? this.cfg.sandboxes.timeoutS);
        } finally {
          slot.release();
        }
      }));
      return forks;
    } catch (e) {
      for (const sb of forks) { sb.state = sb.state === 'ready' ? 'ready' : 'failed'; this.destroy(sb.id).catch(() => {}); }
      throw isEmberdError(e) ? e : new EmberdError('PAUSE_FAILED', `could not fork sandbox ${parent.id}: ${(e as Error).message}`);
    } finally {
      // Clones hold what they map; the saved image itself is not kept.
      rmSync(dir, { recursive: true, force: true });
    }
  }

  // ---- exec -----------------------------------------------------------------------------------

  /** Runs to completion and buffers the output (capped by the daemon's output cap). */
  async exec(id: string, p: ExecParams): Promise<ExecResult> {
    const sb = await this.live(id);
    return this.observeExec('exec', sb.agent!.run(this.request(sb, p)));
  }

  /**
   * Starts an exec whose output is read as it comes: a stream of events whose consumption paces
   * the guest process (credit goes back only as events are read); destroying it kills the process.
   */
  async execStream(id: string, p: ExecParams): Promise<ExecEventStream> {
    const sb = await this.live(id);
    const stream = new ExecEventStream(sb.agent!, this.request(sb, p));
    void this.observeExec('exec', stream.handle!.exited).catch(() => {});
    return stream;
  }

  // ---- pty ------------------------------------------------------------------------------------

  /** An interactive terminal (pty.ts): a login shell unless `argv`; the sandbox's env under `env`. */
  async openPty(id: string, o: PtyOptions): Promise<PtySession> {
    const sb = await this.live(id);
    return new PtySession(sb.agent!, { ...o, env: { ...sb.env, ...o.env } });
  }

  // ---- background processes -------------------------------------------------------------------

  /** Starts a background process; its output is buffered up to the output cap for polling. */
  async startProcess(id: string, p: ExecParams): Promise<BackgroundProcess> {
    const sb = await this.live(id);
    return sb.processes.start(sb.agent!, { ...this.request(sb, p), timeoutMs: p.timeoutMs }, this.cfg.exec.outputCap);
  }

  listProcesses(id: string): BackgroundProcess[] {
    return this.get(id).processes.list();
  }

  getProcess(id: string, pid: string): BackgroundProcess {
    return this.get(id).processes.get(pid);
  }

  /** Buffered output of a background process from `offset`. */
  readProcessOutput(id: string, pid: string, q: { stream: StreamName; offset: number; maxBytes: number }): ProcessOutput {
    return this.getProcess(id, pid).read(q.stream, q.offset, q.maxBytes);
  }

  /** Writes to a running background process's stdin, then closes it if `eof`. */
  async writeProcessStdin(id: string, pid: string, data: Buffer | undefined, eof: boolean): Promise<void> {
    await this.live(id);
    return this.getProcess(id, pid).writeStdin(data, eof);
  }

  async signalProcess(id: string, pid: string, signo: number): Promise<void> {
    await this.live(id);
    this.getProcess(id, pid).signal(signo);
  }

  /** Waits until the process exits or `timeoutMs` passes; the process as it is then. */
  async waitProcess(id: string, pid: string, timeoutMs: number): Promise<BackgroundProcess> {
    await this.live(id);
    const p = this.getProcess(id, pid);
    await p.wait(timeoutMs);
    return p;
  }

  /** Kills the process if it still runs, and forgets it. */
  async removeProcess(id: string, pid: string): Promise<void> {
    return (await this.live(id)).processes.remove(pid);
  }

  // ---- sessions -------------------------------------------------------------------------------

  /**
   * Runs `code` as a cell of session `name` (created on first use) of a ready sandbox.
   * SESSIONS_UNSUPPORTED (not the python pack), INVALID_REQUEST (bad name), TOO_MANY_SESSIONS,
   * SESSION_START_FAILED, AGENT_DISCONNECTED.
   */
  async runInSession(id: string, name: string, p: SessionParams): Promise<SessionResult> {
    this.checkTimeout(p.timeoutMs);
    return this.observeExec('session', (await this.live(id)).sessions.run(name, p.code, {
      timeoutMs: p.timeoutMs ?? this.cfg.exec.defaultTimeoutMs,
      outputCap: this.cfg.exec.outputCap,
      stdin: p.stdin,
    }));
  }

  /**
   * Runs a cell as runInSession does, its output and results as events while it runs; errors
   * before it runs reject `started`. Destroying the stream interrupts the cell.
   */
  streamInSession(id: string, name: string, p: SessionParams): SessionEventStream {
    this.checkTimeout(p.timeoutMs);
    this.get(id);
    const opts = { timeoutMs: p.timeoutMs ?? this.cfg.exec.defaultTimeoutMs, outputCap: this.cfg.exec.outputCap, stdin: p.stdin };
    return new SessionEventStream(async (hooks) => this.observeExec('session', (await this.live(id)).sessions.run(name, p.code, { ...opts, ...hooks })));
  }

  listSessions(id: string): SessionInfo[] {
    return this.get(id).sessions.list();
  }

  async deleteSession(id: string, name: string): Promise<void> {
    return (await this.live(id)).sessions.delete(name);
  }

  // ---- files ----------------------------------------------------------------------------------

  /** Streams `source` into the file at `path` (atomically: a failed upload leaves nothing). */
  // ---- exposed ports (docs/network.md, "Ports") -------------------------------------------------

  /**
   * Exposes `port` of the sandbox (a paused one stays paused: its first connection resumes it);
   * `tcp` adds a listener on 127.0.0.1. `created` is false for a port already exposed.
   */
  async openPort(id: string, port: number, o: { tcp: boolean }): Promise<{ view: PortView; created: boolean }> {
    const sb = this.get(id);
    if (sb.state !== 'paused' && sb.state !== 'pausing' && sb.state !== 'resuming') this.checkReady(sb);
    return sb.ports.open(port, o, async () => {
      const live = await this.live(sb.id);
      return live.agent!.connectPort(port, PORT_CONNECT_TIMEOUT_MS);
    });
  }

  listPorts(id: string): PortView[] {
    return this.get(id).ports.list();
  }

  getPort(id: string, port: number): PortView {
    return this.get(id).ports.get(port);
  }

  async closePort(id: string, port: number): Promise<void> {
    await this.get(id).ports.close(port);
  }

  /**
   * One connection to an exposed port in the guest (for the HTTP proxy); resumes a paused sandbox.
   * `expose`: expose it first if it is not (a port reached by its host name, as E2B's getHost).
   */
  async connectPort(id: string, port: number, o: { expose?: boolean } = {}): Promise<PortConnection> {
    if (o.expose) await this.openPort(id, port, { tcp: false });
    return this.get(id).ports.connect(port);
  }

  async writeFile(id: string, path: string, source: Readable, mode?: string): Promise<{ path: string; size: number }> {
    return (await this.files(id)).writeFile(path, source, { maxBytes: this.cfg.maxUploadBytes, mode });
  }

  /** Extracts a tar stream into directory `path` (created if missing). */
  async writeTar(id: string, path: string, source: Readable): Promise<{ path: string; size: number }> {
    return (await this.files(id)).writeTar(path, source, { maxBytes: this.cfg.maxUploadBytes });
  }

  /** The bytes of a file, as a stream that paces the guest; errors come before the first byte. */
  async readFile(id: string, path: string, signal?: AbortSignal): Promise<Readable> {
    return (await this.files(id)).readFile(path, { signal });
  }

  /** A directory as a tar stream. */
  async readTar(id: string, path: string, signal?: AbortSignal): Promise<Readable> {
    return (await this.files(id)).readTar(path, { signal });
  }

  async statPath(id: string, path: string): Promise<FileStat> {
    return (await this.files(id)).stat(path);
  }

  async listDir(id: string, path: string): Promise<FileStat[]> {
    return (await this.files(id)).list(path);
  }

  async deletePath(id: string, path: string, recursive: boolean): Promise<void> {
    return (await this.files(id)).delete(path, recursive);
  }

  // ---- internals ------------------------------------------------------------------------------

  /** timeout_s within the daemon's bounds, or INVALID_REQUEST saying them. */
  private checkLifetime(timeoutS: number): number {
    const max = this.cfg.sandboxes.maxTimeoutS;
    if (timeoutS === 0 && max !== 0) {
      throw new EmberdError('INVALID_REQUEST', `timeout_s 0 (no deadline) is not allowed by this daemon; ask for at most ${max} s, or start emberd with --max-sandbox-timeout 0`);
    }
    if (max !== 0 && timeoutS > max) {
      throw new EmberdError('INVALID_REQUEST', `timeout_s ${timeoutS} is above this daemon's maximum of ${max} s; ask for less (and extend it later with POST /sandboxes/{id}/timeout) or start emberd with a higher --max-sandbox-timeout`);
    }
    return timeoutS;
  }

  /** Arms the sandbox's deadline; at it the sandbox is destroyed as by a DELETE. */
  private setLifetime(sb: Sandbox, timeoutS: number): void {
    clearTimeout(sb.expiryTimer);
    sb.timeoutS = timeoutS;
    sb.expiresAt = timeoutS ? new Date(Date.now() + timeoutS * 1000) : undefined;
    if (!timeoutS) return;
    sb.expiryTimer = setTimeout(() => {
      if (sb.onTimeout === 'pause' && this.saved) {
        this.pause(sb.id, { force: true }).catch((e: Error) => {
          sb.log.warn(`could not pause at the deadline, destroying instead: ${e.message}`);
          this.destroy(sb.id, 'expired').catch(() => {});
        });
      } else this.destroy(sb.id, 'expired').catch(() => {});
    }, timeoutS * 1000);
    sb.expiryTimer.unref();
  }

  private newSandbox(pack: string, machine: MachineConfig, env: Record<string, string>, limits: GuestLimits = {}): Sandbox {
    const id = newSandboxId();
    return new Sandbox(id, pack, this.cfg.backend.name, join(this.cfg.runBase, id), this.log.child({ sandbox: id }), { machine, env, limits });
  }

  /** disk_mib and pids_max within the daemon's bounds (the guest checks pids_max against its ceiling). */
  private checkLimits(o: CreateOptions): GuestLimits {
    const { diskMib, pidsMax, maxDiskMib } = this.cfg.sandboxes;
    const limits = { diskMib: o.diskMib ?? diskMib, pidsMax: o.pidsMax ?? pidsMax };
    if (limits.diskMib !== undefined && limits.diskMib > maxDiskMib) {
      throw new EmberdError('INVALID_REQUEST', `disk_mib ${limits.diskMib} is above this daemon's maximum of ${maxDiskMib}; ask for less or start emberd with a higher --max-disk`);
    }
    return limits;
  }

  /** The machine a create asks for, within the daemon's bounds, or INVALID_REQUEST saying them. */
  private checkMachine(o: CreateOptions): MachineConfig {
    const { machine, maxVcpus, maxMemoryMib } = this.cfg.sandboxes;
    const m = { vcpus: o.vcpus ?? machine.vcpus, memoryMib: o.memoryMib ?? machine.memoryMib };
    if (m.vcpus > maxVcpus) throw new EmberdError('INVALID_REQUEST', `vcpus ${m.vcpus} is above this daemon's maximum of ${maxVcpus}; ask for fewer or start emberd with a higher --max-vcpus`);
    if (m.memoryMib > maxMemoryMib) throw new EmberdError('INVALID_REQUEST', `memory_mib ${m.memoryMib} is above this daemon's maximum of ${maxMemoryMib}; ask for less or start emberd with a higher --max-memory`);
    return m;
  }

  /**
   * A pooled sandbox, re-handshaken so that it gets this moment's clock, fresh entropy and its
   * hostname; one that does not answer is discarded and the create boots normally.
   */
  private async takeFromPool(pack: string, machine: MachineConfig, env: Record<string, string>, limits: GuestLimits): Promise<Sandbox | undefined> {
    if (!this.pool) return undefined;
    const key = goldenName(pack, machine, this.cfg.sandboxes.machine);
    this.poolShapes.set(key, { pack, machine });
    const sb = this.pool.take(key);
    if (!sb) return undefined;
    Object.assign(sb.env, env);
    Object.assign(sb.limits, limits);
    sb.createdAt = new Date();
    try {
      const ack = await sb.agent!.hello(2000, { hostname: hostnameOf(sb.id), ...helloLimits(limits) });
      sb.applied = { diskBytes: ack.diskBytes, pidsMax: ack.pidsMax };
    } catch (e) {
      this.launcher.stopReason(sb, 'pool_discarded');
      await this.launcher.release(sb, 0);
      if (isEmberdError(e, 'INVALID_REQUEST')) throw e; // the limits, not the VM: a cold boot would refuse them too
      sb.log.warn(`warm pool: discarding a sandbox that did not answer: ${(e as Error).message}`);
      return undefined;
    }
    sb.readyAt = new Date();
    sb.bootMode = 'pool';
    this.sandboxes.set(sb.id, sb);
    sb.log.info({ boot_mode: 'pool' }, 'sandbox ready');
    return sb;
  }

  /**
   * Boots `sb` in a boot slot: a create waits for one at most --boot-queue-timeout (then it fails
   * with sb.refusal, TOO_BUSY), background work as long as it takes. Leaves the sandbox ready, or
   * failed with everything freed.
   */
  private async boot(sb: Sandbox, pack: PackImage, priority: BootPriority, opts: { warm?: boolean } = {}): Promise<void> {
    let slot: BootSlot;
    try {
      slot = await this.slots.acquire(priority, priority === 'create' ? this.cfg.admission.queueTimeoutMs : Infinity, sb.abort.signal);
    } catch (e) {
      sb.refusal = e as EmberdError;
      sb.failure = { code: sb.refusal.code, message: sb.refusal.message };
      sb.state = 'failed';
      return;
    }
    try {
      await this.launcher.start(sb, pack, opts);
    } finally {
      slot.release();
    }
  }

  /** EGRESS_UNAVAILABLE unless this daemon and backend can give a sandbox a network. */
  private checkEgress(): void {
    const why = !this.cfg.egress ? 'egress is not configured in this daemon'
      : !this.cfg.backend.network ? `the ${this.cfg.backend.name} backend cannot attach a network device`
        : this.cfg.egress.unavailable();
    if (why) throw new EmberdError('EGRESS_UNAVAILABLE', `this daemon cannot give sandboxes a network (${why}); create the sandbox without "network"`);
  }

  /** Builds the sandbox's network before its VM boots; a failure leaves the sandbox failed with sb.refusal. */
  private async withEgress(sb: Sandbox, req: EgressRequest | undefined): Promise<void> {
    if (!req) return;
    sb.egressRequest = req;
    try {
      sb.egress = await this.cfg.egress!.open(sb.id, req);
    } catch (e) {
      sb.refusal = isEmberdError(e) ? e : new EmberdError('EGRESS_SETUP_FAILED', (e as Error).message);
      sb.failure = { code: sb.refusal.code, message: sb.refusal.message };
      sb.state = 'failed';
    }
  }

  /**
   * A resumed or forked sandbox's network, built again from its request: a netns, tap and
   * resolver of its own; the guest's side (its address, gateway, MAC) is the same in every
   * sandbox, so the saved guest finds its network as it left it. Its counters start again.
   */
  private async reopenEgress(sb: Sandbox): Promise<void> {
    if (!sb.egressRequest || sb.egress) return;
    sb.egress = await this.cfg.egress!.open(sb.id, sb.egressRequest);
  }

  /** The sandbox with its network counters read afresh (GET /sandboxes/{id}). */
  async inspect(id: string): Promise<Sandbox> {
    const sb = this.get(id);
    await sb.egress?.refresh();
    return sb;
  }

  /** Egress counters over every sandbox, live and gone (for /metrics); undefined without egress. */
  egressTotals(): Promise<EgressTotals> | undefined {
    return this.cfg.egress?.totals();
  }

  /** HOST_MEMORY_LOW unless the host keeps its reserve after giving a new guest its memory. */
  private checkHostMemory(guest: number): void {
    // A VM being torn down gives its memory back in a moment: it never makes a create fail.
    let freeing = 0;
    for (const sb of this.tearingDown) freeing += sb.machine.memoryMib;
    const available = this.hostMemoryMib() + freeing;
    const reserve = this.cfg.admission.memoryReserveMib;
    if (available - guest < reserve) {
      throw new EmberdError('HOST_MEMORY_LOW', `the host has ${available} MiB available; a new ${guest} MiB sandbox would leave less than the ${reserve} MiB reserve (--memory-reserve): delete sandboxes or retry later`, { retryAfterS: 5 });
    }
  }

  /** Pack `pack` in the default shape is kept in the pool at least at --pool-size. */
  private keepPooled(pack: string): void {
    this.poolShapes.set(pack, { pack, machine: this.cfg.sandboxes.machine });
    this.pool!.keep(pack);
  }

  /** A ready, warmed sandbox for the warm pool's `key` (a pack and shape), not registered until handed over. */
  private async prepare(key: string): Promise<Sandbox> {
    const shape = this.poolShapes.get(key);
    if (!shape) throw new Error(`pool shape ${key} is unknown`);
    await this.snapshots?.ensure(key);
    this.checkHostMemory(shape.machine.memoryMib);
    const pack = this.packs.get(shape.pack);
    if (!pack) throw new Error(`pack ${shape.pack} is gone`);
    const sb = this.newSandbox(shape.pack, shape.machine, { ...pack.env });
    sb.created = this.boot(sb, pack, 'background', { warm: true });
    await sb.created;
    if (sb.state !== 'ready') throw new Error(sb.failure?.message ?? 'the sandbox failed to start');
    return sb;
  }

  /** Golden VM `name` (a pack in one machine shape), saved into `dir` (SnapshotStore's builder). */
  private async buildGolden(name: string, dir: string): Promise<{ bytes: number }> {
    const golden = this.goldenSpecs.get(name);
    const pack = golden && this.packs.get(golden.pack);
    if (!golden || !pack) throw new Error(`golden ${name}: its pack is gone`);
    const sb = this.newSandbox(golden.pack, golden.machine, {});
    this.goldens.add(sb);
    const slot = await this.slots.acquire('background');
    try {
      return await this.launcher.saveGolden(sb, pack, dir, () => !this.shuttingDown);
    } finally {
      slot.release();
      this.goldens.delete(sb);
    }
  }

  /**
   * The sandbox, running: a paused one is resumed first (unless it was created with auto_resume
   * false: SANDBOX_PAUSED), one being paused or resumed is waited for.
   */
  private async live(id: string): Promise<Sandbox> {
    const sb = this.get(id);
    if (sb.state === 'ready') return sb;
    await sb.transition?.catch(() => {});
    if (sb.state === 'paused') {
      if (!sb.autoResume) throw new EmberdError('SANDBOX_PAUSED', `sandbox ${sb.id} is paused and was created with auto_resume false; resume it with POST /sandboxes/${sb.id}/resume`);
      await this.resumePaused(sb);
    }
    return this.checkReady(sb);
  }

  /** Sandboxes that hold a VM or are getting one (what --max-sandboxes counts; paused ones do not). */
  private running(): Sandbox[] {
    return this.list().filter((s) => s.state === 'creating' || s.state === 'ready' || s.state === 'pausing' || s.state === 'resuming');
  }

  /** The kernel, initramfs and pack its VM runs from: what a pause or fork of it must keep. */
  private bootFilesOf(sb: Sandbox): SavedFiles {
    return sb.bootFiles ?? { kernel: this.cfg.images.kernel, initramfs: this.cfg.images.initramfs, packImage: this.packs.get(sb.pack)?.image ?? '' };
  }

  private pauseStore(): SavedStore {
    if (!this.saved) throw this.noPause();
    return this.saved;
  }

  private noPause(): EmberdError {
    return new EmberdError('PAUSE_UNSUPPORTED', this.cfg.backend.snapshots
      ? 'this daemon keeps no paused sandboxes (it was started without a state dir for them)'
      : `the ${this.cfg.backend.name} backend cannot save a running VM, so sandboxes cannot be paused or forked here`);
  }

  /**
   * Nothing may run in the foreground while a sandbox is saved: its client would wait on a VM
   * that is gone. Without `force` that is SANDBOX_BUSY; with it, those execs are killed (and
   * waited for) and busy sessions ended.
   */
  private async quiesce(sb: Sandbox, force: boolean): Promise<void> {
    const agent = sb.agent!;
    const owned = new Set<number>([...sb.processes.list().map((p) => p.channel).filter((c): c is number => c !== undefined), ...sb.sessions.save().map((x) => x.channel)]);
    const foreground = agent.channels().filter((h) => !owned.has(h.channel));
    const busySessions = sb.sessions.busy();
    const stdinPending = sb.processes.list().filter((p) => p.stdinPending).map((p) => p.id);
    if (!force) {
      const what = [
        foreground.length && `${foreground.length} exec(s), file transfer(s) or terminal(s)`,
        busySessions.length && `session cell(s) in ${busySessions.join(', ')}`,
        stdinPending.length && `stdin still being written to ${stdinPending.join(', ')}`,
      ].filter(Boolean);
      if (what.length) throw new EmberdError('SANDBOX_BUSY', `sandbox ${sb.id} is running ${what.join(' and ')}; wait for them to finish (or stop them) and try again`);
      return;
    }
    for (const h of foreground) h.signal(9);
    await Promise.allSettled([
      ...foreground.map((h) => settlesWithin(h.exited, FORCED_PAUSE_WAIT_MS)),
      ...busySessions.map((name) => sb.sessions.delete(name)),
    ]);
  }

  private async resumePaused(sb: Sandbox): Promise<void> {
    const paused = sb.paused!;
    const run = (async () => {
      const store = this.pauseStore();
      const found = store.read(paused.dir);
      if ('error' in found) {
        const err = found.error;
        sb.failure = err;
        sb.state = 'failed';
        throw new EmberdError(err.code, err.message);
      }
      const rec = found.record;
      if (rec.vmm !== this.cfg.backend.snapshots?.fingerprint) {
        throw new EmberdError('SAVED_STATE_INCOMPATIBLE', `sandbox ${sb.id} was saved by ${rec.vmm}; this daemon runs ${this.cfg.backend.snapshots?.fingerprint ?? this.cfg.backend.name}: resume it with that VMM, or delete it`);
      }
      const live = this.running();
      if (live.length >= this.cfg.sandboxes.max) {
        throw new EmberdError('TOO_MANY_SANDBOXES', `this daemon already runs ${live.length} sandboxes (the limit is ${this.cfg.sandboxes.max}); delete or pause some to resume ${sb.id}`, { retryAfterS: retryAfterExpiry(live) });
      }
      this.checkHostMemory(sb.machine.memoryMib);
      if (sb.egressRequest) this.checkEgress();
      clearTimeout(paused.timer);
      sb.state = 'resuming';
      const slot = await this.slots.acquire('create', this.cfg.admission.queueTimeoutMs);
      const t0 = performance.now();
      try {
        await this.reopenEgress(sb);
      } catch (e) {
        slot.release();
        sb.state = 'paused';
        this.keepPaused(sb);
        throw e;
      }
      try {
        sb.bootFiles = store.filesOf(paused.dir);
        await this.launcher.resumeSaved(sb, sb.bootFiles, join(paused.dir, VM_DIR), {
          agent: fromSavedAgent(rec.agent), processes: rec.processes, sessions: rec.sessions,
        }, 'resume');
      } catch (e) {
        await sb.egress?.close();
        sb.egress = undefined;
        sb.state = 'failed';
        sb.failure = { code: 'SAVED_STATE_CORRUPT', message: `sandbox ${sb.id} could not be resumed from its saved state (${(e as Error).message}); delete it` };
        sb.log.warn({ code: sb.failure.code }, sb.failure.message);
        throw new EmberdError('SAVED_STATE_CORRUPT', sb.failure.message);
      } finally {
        slot.release();
      }
      store.resumed(sb.id);
      sb.paused = undefined;
      sb.state = 'ready';
      sb.readyAt = new Date();
      this.setLifetime(sb, sb.timeoutS ?? 0);
      sb.log.info({ resume_ms: Math.round(performance.now() - t0) }, 'sandbox resumed');
    })();
    sb.transition = run;
    try { await run; } finally { if (sb.transition === run) sb.transition = undefined; }
  }

  /** A paused sandbox is kept --paused-retention, then deleted. */
  private keepPaused(sb: Sandbox): void {
    const s = this.cfg.paused!.retentionS;
    if (!sb.paused || !s) return;
    const left = sb.paused.pausedAt.getTime() + s * 1000 - Date.now();
    sb.paused.expiresAt = new Date(Date.now() + Math.max(0, left));
    sb.paused.timer = setTimeout(() => { this.destroy(sb.id, 'expired').catch(() => {}); }, Math.min(Math.max(0, left), 2 ** 31 - 1));
    sb.paused.timer.unref();
  }

  private record(sb: Sandbox, guest: GuestState, bytes: number, pauseMs: number): SavedSandbox {
    return {
      format: SAVED_FORMAT,
      id: sb.id,
      pack: sb.pack,
      vmm: this.cfg.backend.snapshots!.fingerprint,
      backend: this.cfg.backend.name,
      machine: sb.machine,
      env: sb.env,
      limits: sb.limits,
      created_at: sb.createdAt.toISOString(),
      paused_at: new Date().toISOString(),
      timeout_s: sb.timeoutS ?? 0,
      on_timeout: sb.onTimeout,
      auto_resume: sb.autoResume,
      ...(sb.egressRequest && { network: { allow: sb.egressRequest.allow, ...(sb.egressRequest.rateMbit !== undefined && { rate_mbit: sb.egressRequest.rateMbit }) } }),
      bytes,
      pause_ms: pauseMs,
      processes: guest.processes,
      sessions: guest.sessions,
      agent: toSavedAgent(guest.agent),
    };
  }

  /** At start: the sandboxes an earlier daemon paused, listed as paused (or failed, saying why they cannot resume). */
  private loadPaused(): void {
    if (!this.saved) return;
    for (const f of this.saved.scan()) {
      if ('error' in f) {
        const sb = new Sandbox(f.id, f.pack ?? 'unknown', this.cfg.backend.name, join(this.cfg.runBase, f.id), this.log.child({ sandbox: f.id }), { machine: this.cfg.sandboxes.machine, env: {} });
        sb.state = 'failed';
        sb.failure = f.error;
        sb.paused = { dir: f.dir, pausedAt: f.pausedAt ? new Date(f.pausedAt) : new Date(), bytes: 0, pauseMs: 0, expiresAt: undefined };
        this.sandboxes.set(sb.id, sb);
        sb.log.warn({ code: f.error.code }, f.error.message);
        continue;
      }
      const r = f.record;
      const sb = new Sandbox(r.id, r.pack, this.cfg.backend.name, join(this.cfg.runBase, r.id), this.log.child({ sandbox: r.id }), { machine: r.machine, env: r.env, limits: r.limits });
      sb.createdAt = new Date(r.created_at);
      sb.state = 'paused';
      sb.timeoutS = r.timeout_s;
      sb.onTimeout = r.on_timeout;
      sb.autoResume = r.auto_resume;
      sb.egressRequest = r.network && { allow: r.network.allow, rateMbit: r.network.rate_mbit };
      sb.paused = { dir: f.dir, pausedAt: new Date(r.paused_at), bytes: r.bytes, pauseMs: r.pause_ms, expiresAt: undefined };
      this.sandboxes.set(sb.id, sb);
      this.keepPaused(sb);
    }
    const n = this.list().length;
    if (n) this.log.info({ paused: n }, `found ${n} paused sandboxes`);
  }

  /** The sandbox, if it is ready: SANDBOX_FAILED or SANDBOX_NOT_READY otherwise. */
  private ready(id: string): Sandbox {
    return this.checkReady(this.get(id));
  }

  private checkReady(sb: Sandbox): Sandbox {
    if (sb.state === 'ready') return sb;
    if (sb.state === 'paused') throw new EmberdError('SANDBOX_PAUSED', `sandbox ${sb.id} is paused; resume it with POST /sandboxes/${sb.id}/resume`);
    if (sb.state === 'failed') throw new EmberdError('SANDBOX_FAILED', `sandbox ${sb.id} has failed (${sb.failure?.message ?? 'unknown reason'}); delete it and create a new one`);
    throw new EmberdError('SANDBOX_NOT_READY', `sandbox ${sb.id} is ${sb.state}; wait for POST /sandboxes to answer before using it`);
  }

  /** One SandboxFiles per sandbox, on its agent. */
  private async files(id: string): Promise<SandboxFiles> {
    const sb = await this.live(id);
    const { exec } = this.cfg;
    sb.files ??= new SandboxFiles(sb.agent!, { timeoutMs: exec.defaultTimeoutMs, transferTimeoutMs: exec.maxTimeoutMs, outputCap: exec.outputCap });
    return sb.files;
  }

  /** The agent request of an exec in `sb`: the sandbox's env under the exec's own. */
  private request(sb: Sandbox, p: ExecParams): ExecRequest {
    this.checkTimeout(p.timeoutMs);
    return {
      code: p.code,
      argv: p.argv,
      env: { ...sb.env, ...p.env },
      cwd: p.cwd,
      stdin: p.stdin,
      timeoutMs: p.timeoutMs ?? this.cfg.exec.defaultTimeoutMs,
      outputCap: this.cfg.exec.outputCap,
    };
  }

  /**
   * Tells the observer how `run` (an exec or a cell, accepted now) ends; resolves as it does. A
   * 4xx refusal (a bad session name, too many sessions) is the request's, not an exec that failed.
   */
  private observeExec<R extends { exitCode: number; signal?: number; timedOut: boolean }>(kind: ExecKind, run: Promise<R>): Promise<R> {
    const observer = this.cfg.observer;
    if (!observer) return run;
    const t0 = performance.now();
    const done = (outcome: ExecOutcome) => observer.execDone(kind, outcome, (performance.now() - t0) / 1000);
    return run.then(
      (r) => { done(r.timedOut ? 'timeout' : r.exitCode === 0 && !r.signal ? 'ok' : 'nonzero_exit'); return r; },
      (e: unknown) => { if (!(isEmberdError(e) && e.status < 500)) done('error'); throw e; },
    );
  }

  private checkTimeout(ms: number | undefined): void {
    const max = this.cfg.exec.maxTimeoutMs;
    if (ms !== undefined && ms > max) {
      throw new EmberdError('INVALID_REQUEST', `timeout_ms ${ms} is above this daemon's maximum of ${max}; ask for less or start emberd with a higher --exec-max-timeout`);
    }
  }
}
