// The sandbox manager: the registry of live sandboxes and every lifecycle transition. The HTTP
// layer turns requests into calls here; this module never sees HTTP.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient, type ExecCallbacks, type ExecHandle, type ExecRequest, type ExecResult } from '../agent/client.ts';
import type { BackgroundProcess } from './processes.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import type { Backend, BootSpec, MachineConfig } from '../vmm/backend.ts';
import { isSandboxId, newSandboxId } from './ids.ts';
import { Sandbox } from './sandbox.ts';
import { SnapshotStore, type SnapshotInputs, type SnapshotView } from './snapshots.ts';
import { WarmPool, type PoolView } from './pool.ts';

export interface PackImage { name: string; image: string }

export interface ManagerConfig {
  backend: Backend;
  kernel: string;
  initramfs: string;
  packs: Map<string, PackImage>;
  defaultPack: string;
  machine: MachineConfig;
  runBase: string;
  bootTimeoutMs: number;
  maxSandboxes: number;
  exec: { defaultTimeoutMs: number; maxTimeoutMs: number; outputCap: number };
  /** File transfers (src/sandbox/files.ts): the largest upload accepted, in bytes. */
  files?: { maxUploadBytes: number };
  /** Golden snapshots per pack (when the backend supports them); absent = always cold boot. */
  snapshots?: { dir: string; inputs: Map<string, SnapshotInputs> };
  /** Ready sandboxes kept per pack; 0 or absent disables the warm pool. */
  poolSize?: number;
  log?: (msg: string) => void;
}

export interface ExecParams {
  code?: string;
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: Buffer;
  timeoutMs?: number;
}

/** A sandbox's hostname: its id, made a valid DNS label. */
function hostnameOf(id: string): string {
  return id.replaceAll('_', '-');
}

/** A restore that has not answered by then is abandoned for a cold boot. */
const RESTORE_TIMEOUT_MS = 15_000;

/** How long a guest gets to power off by itself after SHUTDOWN before the VMM is told to quit. */
const SHUTDOWN_GRACE_MS = 2000;

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly cfg: ManagerConfig;
  private shuttingDown = false;
  private readonly snapshots: SnapshotStore | undefined;
  private readonly pool: WarmPool | undefined;
  /** VMs booted to become golden snapshots, so shutdown can stop them too. */
  private readonly goldens = new Set<Sandbox>();

  constructor(cfg: ManagerConfig) {
    this.cfg = cfg;
    const log = cfg.log ?? (() => {});
    if (cfg.snapshots && cfg.backend.snapshots) {
      this.snapshots = new SnapshotStore(cfg.snapshots.dir, cfg.snapshots.inputs, (pack, dir) => this.buildGolden(pack, dir), log);
    }
    if (cfg.poolSize) {
      this.pool = new WarmPool(cfg.poolSize, (pack) => this.prepare(pack), (sb) => this.release(sb, 0).then(() => { sb.state = 'gone'; }), log);
    }
  }

  /** Background work after start-up: golden snapshots first, then the warm pool from them. */
  start(): void {
    const pruned = this.snapshots?.prune() ?? 0;
    if (pruned) this.cfg.log?.(`removed ${pruned} outdated snapshots`);
    for (const pack of this.cfg.packs.keys()) {
      if (this.pool) this.pool.refill(pack);
      else void this.snapshots?.ensure(pack);
    }
  }

  /** Snapshot and pool state, for GET /. */
  status(): { snapshots: Record<string, SnapshotView> | null; pool: Record<string, PoolView> | null } {
    return { snapshots: this.snapshots?.view() ?? null, pool: this.pool?.view() ?? null };
  }

  get config(): Readonly<ManagerConfig> {
    return this.cfg;
  }

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  get(id: string): Sandbox {
    if (!isSandboxId(id)) throw new EmberdError('INVALID_SANDBOX_ID', `"${id}" is not a sandbox id; ids look like sb_ followed by 20 lowercase letters and digits, as returned by POST /sandboxes`);
    const sb = this.sandboxes.get(id);
    if (!sb) throw new EmberdError('SANDBOX_NOT_FOUND', `sandbox ${id} does not exist (it was deleted, or never created on this daemon); list sandboxes with GET /sandboxes`);
    return sb;
  }

  /** Boots a VM and resolves once its agent has answered the handshake. */
  async create(packName?: string): Promise<Sandbox> {
    if (this.shuttingDown) throw new EmberdError('SHUTTING_DOWN', 'emberd is shutting down; retry against a running daemon');
    const name = packName ?? this.cfg.defaultPack;
    const pack = this.cfg.packs.get(name);
    if (!pack) {
      throw new EmberdError('UNKNOWN_LANGUAGE_PACK', `language pack "${name}" is not available; available packs: ${[...this.cfg.packs.keys()].join(', ')}`);
    }
    const live = this.list().filter((s) => s.state === 'creating' || s.state === 'ready').length;
    if (live >= this.cfg.maxSandboxes) {
      throw new EmberdError('TOO_MANY_SANDBOXES', `this daemon already runs ${live} sandboxes (the limit is ${this.cfg.maxSandboxes}); delete some or start emberd with a higher --max-sandboxes`);
    }
    const pooled = await this.takeFromPool(name);
    if (pooled) return pooled;
    const id = newSandboxId();
    const sb = new Sandbox(id, name, this.cfg.backend.name, join(this.cfg.runBase, id));
    this.sandboxes.set(id, sb);
    sb.created = this.boot(sb, pack);
    await sb.created;
    if (sb.state !== 'ready') throw new EmberdError((sb.failure?.code as 'BOOT_FAILED') ?? 'BOOT_FAILED', sb.failure?.message ?? 'the sandbox failed to start');
    return sb;
  }

  /**
   * A pooled sandbox, re-handshaken so that it gets this moment's clock, fresh entropy and its
   * hostname; one that does not answer is discarded and the create boots normally.
   */
  private async takeFromPool(pack: string): Promise<Sandbox | undefined> {
    const sb = this.pool?.take(pack);
    if (!sb) return undefined;
    sb.createdAt = new Date();
    try {
      await sb.agent!.hello(2000, { hostname: hostnameOf(sb.id) });
    } catch (e) {
      this.cfg.log?.(`warm pool: discarding ${sb.id}: ${(e as Error).message}`);
      await this.release(sb, 0);
      return undefined;
    }
    sb.readyAt = new Date();
    sb.bootMode = 'pool';
    this.sandboxes.set(sb.id, sb);
    return sb;
  }

  /** A ready sandbox for the warm pool (not registered until handed over). */
  private async prepare(packName: string): Promise<Sandbox> {
    await this.snapshots?.ensure(packName);
    const pack = this.cfg.packs.get(packName)!;
    const id = newSandboxId();
    const sb = new Sandbox(id, packName, this.cfg.backend.name, join(this.cfg.runBase, id));
    sb.created = this.boot(sb, pack);
    await sb.created;
    if (sb.state !== 'ready') throw new Error(sb.failure?.message ?? 'the sandbox failed to start');
    return sb;
  }

  /**
   * Boots a pack's golden VM, lets the agent settle, warms the interpreter into the page cache
   * (so a clone's first exec is fast), and saves it. The guest has run no user code.
   */
  private async buildGolden(packName: string, dir: string): Promise<{ bytes: number }> {
    const pack = this.cfg.packs.get(packName)!;
    const id = newSandboxId();
    const sb = new Sandbox(id, packName, this.cfg.backend.name, join(this.cfg.runBase, id));
    this.goldens.add(sb);
    try {
      await this.launch(sb, pack, Date.now() + this.cfg.bootTimeoutMs);
      await sb.agent!.run({ code: '', timeoutMs: 60_000 });
      if (this.shuttingDown) throw new Error('emberd is shutting down');
      return await this.cfg.backend.snapshots!.save(sb.vm!, dir);
    } finally {
      this.goldens.delete(sb);
      await this.discardVm(sb);
    }
  }

  private async boot(sb: Sandbox, pack: PackImage): Promise<void> {
    const deadline = Date.now() + this.cfg.bootTimeoutMs;
    try {
      const snapshot = this.snapshots?.usable(pack.name);
      if (snapshot) {
        try {
          await this.launch(sb, pack, Math.min(deadline, Date.now() + RESTORE_TIMEOUT_MS), snapshot);
        } catch (e) {
          // Never a failed create that a cold boot would have served: fall back, rebuild the snapshot.
          if (sb.cancelled) throw e;
          this.snapshots!.invalidate(pack.name, (e as Error).message);
          await this.discardVm(sb);
        }
      }
      if (!sb.vm) await this.launch(sb, pack, deadline);
      if (sb.cancelled) throw new EmberdError('SANDBOX_NOT_FOUND', 'the sandbox was deleted while it was starting');
      if (sb.state !== 'creating') return; // the VM died meanwhile; onVmExit recorded why
      sb.state = 'ready';
      sb.readyAt = new Date();
  } catch (e) {
      // Any failure to start that is not a timeout or a cancellation is a boot failure to the caller.
      const err = isEmberdError(e) && ['BOOT_TIMEOUT', 'AGENT_TIMEOUT', 'SANDBOX_NOT_FOUND', 'AGENT_VERSION_MISMATCH'].includes(e.code)
        ? e : new EmberdError('BOOT_FAILED', `the sandbox failed to start: ${(e as Error).message}`);
      const tail = sb.consoleTail(1500).trim();
      const message = err.code === 'BOOT_TIMEOUT' || err.code === 'AGENT_TIMEOUT'
        ? `the guest did not answer within ${this.cfg.bootTimeoutMs} ms of boot (the host may be overloaded: raise --boot-timeout)${tail ? `; last console output: ${tail}` : ''}`
        : `${err.message}${tail && !err.message.includes(tail) ? `; last console output: ${tail}` : ''}`;
      sb.failure ??= sb.cancelled
        ? { code: 'SANDBOX_NOT_FOUND', message: 'the sandbox was deleted while it was starting' }
        : { code: err.code === 'AGENT_TIMEOUT' ? 'BOOT_TIMEOUT' : err.code, message };
      await this.release(sb, 0);
      sb.state = 'failed';
      if (sb.cancelled) this.sandboxes.delete(sb.id);
    }
  }

  /** Cold-boots (or, given a snapshot, restores) the VM and completes the handshake. */
  private async launch(sb: Sandbox, pack: PackImage, deadline: number, snapshot?: string): Promise<void> {
    const spec = this.bootSpec(sb.id, sb.runDir, pack, deadline);
    const vm = snapshot ? await this.cfg.backend.snapshots!.restore(spec, snapshot) : await this.cfg.backend.boot(spec);
    sb.vm = vm;
    sb.bootMode = snapshot ? 'restore' : 'cold';
    void vm.exited.then((exit) => { if (sb.vm === vm) this.onVmExit(sb, exit.reason); });
    sb.agent = new AgentClient(vm.control, {
      onProtocolError: (code, message) => this.cfg.log?.(`${sb.id}: guest protocol error ${code}: ${message}`),
    });
    const ack = await this.handshake(sb, sb.agent, deadline);
    sb.agentVersion = ack.agentVersion;
  }

  /** The machine every sandbox of a pack runs: identical for cold boots, goldens and restores. */
  private bootSpec(id: string, runDir: string, pack: PackImage, deadline: number): BootSpec {
    return {
      id,
      runDir,
      kernel: this.cfg.kernel,
      initramfs: this.cfg.initramfs,
      packImage: pack.image,
      machine: this.cfg.machine,
      kernelArgs: [],
      deadline,
    };
  }

  /** Drops a VM that failed to become ready, so the sandbox can try another way. */
  private async discardVm(sb: Sandbox): Promise<void> {
    const { vm, agent } = sb;
    sb.vm = undefined;
    sb.agent = undefined;
    agent?.close();
    await vm?.stop(0);
    rmSync(sb.runDir, { recursive: true, force: true });
  }

  /** HELLO until the boot deadline, unless the sandbox is deleted or its VM dies meanwhile. */
  private handshake(sb: Sandbox, agent: AgentClient, deadline: number) {
    return agent.helloUntil(deadline, { hostname: hostnameOf(sb.id) }, () => !sb.cancelled && sb.state === 'creating');
  }

  private onVmExit(sb: Sandbox, reason: string): void {
    // While creating, the boot path sees the closed control stream and releases; while
    // destroying, the exit is expected.
    if (sb.state !== 'ready') return;
    sb.failure = { code: 'VMM_EXITED', message: `the VM stopped unexpectedly (${reason}); delete this sandbox and create a new one` };
    this.cfg.log?.(`${sb.id}: ${sb.failure.message}`);
    sb.state = 'failed';
    void this.release(sb, 0);
  }

  /** Runs to completion and buffers the output (capped by the daemon's output cap). */
  async exec(id: string, p: ExecParams): Promise<ExecResult> {
    return this.agentOf(id).run(this.request(p));
  }

  /** Starts an exec whose output the caller consumes as it comes (streaming). */
  execStreaming(id: string, p: ExecParams, callbacks: ExecCallbacks): ExecHandle {
    return this.agentOf(id).exec(this.request(p), callbacks);
  }

  /** Starts a background process; its output is buffered up to the output cap for polling. */
  startProcess(id: string, p: ExecParams): BackgroundProcess {
    const sb = this.get(id);
    const agent = this.agentOf(id);
    return sb.processes.start(agent, { ...this.request(p), timeoutMs: p.timeoutMs }, this.cfg.exec.outputCap);
  }

  /** The agent of a ready sandbox, for operations built on execs (file transfers). */
  readyAgent(id: string): AgentClient {
    return this.agentOf(id);
  }

  private agentOf(id: string): AgentClient {
    const sb = this.get(id);
    this.requireReady(sb);
    return sb.agent!;
  }

  private request(p: ExecParams): ExecRequest {
    return {
      code: p.code,
      argv: p.argv,
      env: p.env,
      cwd: p.cwd,
      stdin: p.stdin,
      timeoutMs: p.timeoutMs ?? this.cfg.exec.defaultTimeoutMs,
      outputCap: this.cfg.exec.outputCap,
    };
  }

  private requireReady(sb: Sandbox): void {
    if (sb.state === 'ready') return;
    if (sb.state === 'failed') throw new EmberdError('SANDBOX_FAILED', `sandbox ${sb.id} has failed (${sb.failure?.message ?? 'unknown reason'}); delete it and create a new one`);
    throw new EmberdError('SANDBOX_NOT_READY', `sandbox ${sb.id} is ${sb.state}; wait for POST /sandboxes to answer before using it`);
  }

  /** Ends the VM and removes every trace of the sandbox. Idempotent. */
  destroy(id: string): Promise<void> {
    const sb = this.get(id);
    sb.destroying ??= (async () => {
      if (sb.state === 'creating') {
        sb.cancelled = true;
        sb.agent?.close(); // a pending handshake fails at once
        await sb.created;
      }
      if (sb.state === 'ready') sb.state = 'destroying';
      await this.release(sb, SHUTDOWN_GRACE_MS);
      sb.state = 'gone';
      this.sandboxes.delete(sb.id);
    })();
    return sb.destroying;
  }

  /**
   * Stops the VM (a graceful guest shutdown first when graceMs > 0) and removes the run dir.
   * Runs once per sandbox; later callers wait for the same teardown.
   */
  private release(sb: Sandbox, graceMs: number): Promise<void> {
    sb.released ??= (async () => {
      void sb.sessions.closeAll(); // no new sessions; the VM's end takes the interpreters along
      if (sb.vm) {
        if (graceMs > 0 && sb.state !== 'failed') sb.agent?.shutdown();
        await sb.vm.stop(sb.state === 'failed' ? 0 : graceMs);
        sb.lastConsole = sb.vm.consoleTail(4096);
      }
      sb.agent?.close();
      rmSync(sb.runDir, { recursive: true, force: true });
    })();
    return sb.released;
  }

  /** Destroys every sandbox; used on SIGINT/SIGTERM. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    await Promise.allSettled([
      ...this.list().map((sb) => this.destroy(sb.id)),
      this.pool?.close(),
      ...[...this.goldens].map((sb) => this.discardVm(sb)),
    ]);
  }
}
