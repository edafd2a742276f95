// The sandbox manager: the registry of live sandboxes and every lifecycle transition. The HTTP
// layer turns requests into calls here; this module never sees HTTP.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient, type ExecCallbacks, type ExecHandle, type ExecRequest, type ExecResult } from '../agent/client.ts';
import type { BackgroundProcess } from './processes.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import type { Backend, MachineConfig } from '../vmm/backend.ts';
import { isSandboxId, newSandboxId } from './ids.ts';
import { Sandbox } from './sandbox.ts';

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

/** How long a guest gets to power off by itself after SHUTDOWN before the VMM is told to quit. */
const SHUTDOWN_GRACE_MS = 2000;

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly cfg: ManagerConfig;
  private shuttingDown = false;

  constructor(cfg: ManagerConfig) {
    this.cfg = cfg;
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
    const id = newSandboxId();
    const sb = new Sandbox(id, name, this.cfg.backend.name, join(this.cfg.runBase, id));
    this.sandboxes.set(id, sb);
    sb.created = this.boot(sb, pack);
    await sb.created;
    if (sb.state !== 'ready') throw new EmberdError((sb.failure?.code as 'BOOT_FAILED') ?? 'BOOT_FAILED', sb.failure?.message ?? 'the sandbox failed to start');
    return sb;
  }

  private async boot(sb: Sandbox, pack: PackImage): Promise<void> {
    const deadline = Date.now() + this.cfg.bootTimeoutMs;
    try {
      sb.vm = await this.cfg.backend.boot({
        id: sb.id,
        runDir: sb.runDir,
        kernel: this.cfg.kernel,
        initramfs: this.cfg.initramfs,
        packImage: pack.image,
        machine: this.cfg.machine,
        kernelArgs: [`emberd.hostname=${hostnameOf(sb.id)}`],
        deadline,
      });
      const vm = sb.vm;
      void vm.exited.then((exit) => this.onVmExit(sb, exit.reason));
      const agent = new AgentClient(vm.control, {
        onProtocolError: (code, message) => this.cfg.log?.(`${sb.id}: guest protocol error ${code}: ${message}`),
      });
      sb.agent = agent;
      const ack = await this.handshake(sb, agent, deadline);
      sb.agentVersion = ack.agentVersion;
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

  /** HELLO, repeated until the deadline: the first one may sit in a buffer the guest never reads. */
  private async handshake(sb: Sandbox, agent: AgentClient, deadline: number) {
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || sb.cancelled || sb.state !== 'creating') throw new EmberdError('BOOT_TIMEOUT', 'no handshake from the guest agent before the boot deadline');
      try {
        return await agent.hello(Math.min(left, 3000), { hostname: hostnameOf(sb.id) });
      } catch (e) {
        if (!isEmberdError(e, 'AGENT_TIMEOUT')) throw e;
      }
    }
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
    await Promise.allSettled(this.list().map((sb) => this.destroy(sb.id)));
  }
}
