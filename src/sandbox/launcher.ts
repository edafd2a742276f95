// How a sandbox's VM comes up and goes away: a restore of the pack's golden snapshot with a cold
// boot as the fallback, the HELLO handshake under the boot deadline, failures mapped to stable
// codes with the console tail, and a teardown that leaves no process or file behind. The manager
// decides when; this module says how. Never sees HTTP.
import { rmSync } from 'node:fs';
import { AgentClient, type AgentState } from '../agent/client.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import { settlesWithin } from '../settles-within.ts';
import type { Backend, BootSpec, MachineConfig, VmHandle } from '../vmm/backend.ts';
import type { SandboxObserver, VmEndReason } from './observer.ts';
import type { SavedProcess } from './processes.ts';
import { helloLimits, type Sandbox } from './sandbox.ts';
import type { SavedFiles } from './saved.ts';
import type { ChannelOwner, SavedSession } from './sessions.ts';
import { goldenName, type SnapshotStore } from './snapshots.ts';

/** What a language pack boots from, and what GET /packs says of it. */
export interface PackImage {
  name: string;
  image: string;
  interpreter?: string[];
  size?: number;
  sha256?: string;
  description?: string;
  /** Variables every exec of the pack's sandboxes inherits (a sandbox's env wins). */
  env?: Record<string, string>;
  custom?: boolean;
}

export interface LauncherConfig {
  backend: Backend;
  kernel: string;
  initramfs: string;
  /** The daemon's default machine shape (whose goldens are named after the pack alone). */
  machine: MachineConfig;
  bootTimeoutMs: number;
  /** Told when each VMM process exits, and why. */
  observer?: SandboxObserver;
}

/** After the control channel closed, how long the VMM gets to exit before the sandbox is failed. */
const AGENT_LOSS_GRACE_MS = 2000;

/** The host's side of a saved guest: its channels and what lives on them. */
export interface GuestState {
  agent: AgentState;
  processes: SavedProcess[];
  sessions: SavedSession[];
}

/** How long the guest gets to answer the PING that makes sure it read everything before a save. */
const SUSPEND_TIMEOUT_MS = 5000;

/** A restore that has not answered by then is abandoned for a cold boot. */
const RESTORE_TIMEOUT_MS = 15_000;

/** A line of output in the pack's language (by its interpreter's name), or empty code. */
function warmUpCode(pack: PackImage): string {
  const bin = (pack.interpreter?.[0] ?? '').split('/').pop() ?? '';
  if (bin.startsWith('python')) return 'print(6*7)';
  if (bin === 'node' || bin === 'nodejs') return 'console.log(6*7)';
  if (/^(ba|da|z|k)?sh$/.test(bin)) return 'echo 42';
  return '';
}

/** The most a warm-up exec may take before the sandbox is handed over unwarmed. */
const WARM_UP_TIMEOUT_MS = 10_000;

/** Codes a failed start keeps; anything else is BOOT_FAILED to the caller. */
const START_CODES = new Set(['BOOT_TIMEOUT', 'AGENT_TIMEOUT', 'SANDBOX_NOT_FOUND', 'AGENT_VERSION_MISMATCH', 'INVALID_REQUEST']);

/** A sandbox's hostname: its id, made a valid DNS label. */
export function hostnameOf(id: string): string {
  return id.replaceAll('_', '-');
}

export class Launcher {
  private readonly cfg: LauncherConfig;
  private readonly snapshots: SnapshotStore | undefined;
  /** Why a sandbox's VM is being stopped, and why a discarded VM was (for observer.vmEnded). */
  private readonly stopping = new WeakMap<Sandbox, VmEndReason>();
  private readonly discarded = new WeakMap<VmHandle, VmEndReason>();

  constructor(cfg: LauncherConfig, snapshots: SnapshotStore | undefined) {
    this.cfg = cfg;
    this.snapshots = snapshots;
  }

  /**
   * Brings the sandbox's VM up until its agent answered: `ready`, or `failed` with the reason in
   * sb.failure and every resource already freed. Never rejects.
   */
  async start(sb: Sandbox, pack: PackImage, opts: { warm?: boolean } = {}): Promise<void> {
    const deadline = Date.now() + this.cfg.bootTimeoutMs;
    try {
      const golden = goldenName(pack.name, sb.machine, this.cfg.machine);
      // A golden has no network device, and a NIC cannot be added to a restored microvm: a
      // sandbox with `network` always cold-boots (docs/network.md "Egress").
      const snapshot = sb.egress ? undefined : this.snapshots?.usable(golden);
      if (snapshot) {
        try {
          await this.launch(sb, { packImage: pack.image }, Math.min(deadline, Date.now() + RESTORE_TIMEOUT_MS), snapshot);
        } catch (e) {
          // Never a failed create that a cold boot would have served: fall back, rebuild the snapshot.
          // (Limits the guest refused are the request's fault, not the snapshot's.)
          if (sb.cancelled || isEmberdError(e, 'INVALID_REQUEST')) throw e;
          this.snapshots!.invalidate(golden, (e as Error).message);
          await this.discardVm(sb, 'restore_failed');
        }
      }
      if (!sb.vm) await this.launch(sb, { packImage: pack.image }, deadline);
      if (sb.bootMode === 'restore' || opts.warm) await this.warmUp(sb, pack, deadline);
      if (sb.cancelled) throw new EmberdError('SANDBOX_NOT_FOUND', 'the sandbox was deleted while it was starting');
      if (sb.state !== 'creating') return; // the VM died meanwhile; onVmExit recorded why
      sb.state = 'ready';
      sb.readyAt = new Date();
    } catch (e) {
      sb.failure ??= sb.cancelled
        ? { code: 'SANDBOX_NOT_FOUND', message: 'the sandbox was deleted while it was starting' }
        : this.startFailure(sb, e);
      this.stopReason(sb, 'boot_failed');
      await this.release(sb, 0);
      sb.state = 'failed';
    }
  }

  /**
   * Boots a pack's golden VM, lets the agent settle, warms the interpreter into the page cache (so
   * a clone's first exec is fast), and saves it into `dir`. The guest has run no user code. The VM
   * is gone afterwards, whatever happened.
   */
  async saveGolden(sb: Sandbox, pack: PackImage, dir: string, stillWanted: () => boolean): Promise<{ bytes: number }> {
    this.stopReason(sb, 'golden');
    try {
      await this.launch(sb, { packImage: pack.image }, Date.now() + this.cfg.bootTimeoutMs);
      await sb.agent!.run({ code: '', timeoutMs: 60_000 });
      if (!stillWanted()) throw new Error('emberd is shutting down');
      return await this.cfg.backend.snapshots!.save(sb.vm!, dir);
    } finally {
      await this.discardVm(sb);
    }
  }

  /**
   * Runs the pack's interpreter once in a VM that just came up, so that its first user exec costs
   * what later ones do: a new QEMU translates the guest's code again (~22k blocks, ~145 ms under
   * TCG), and the exec path (forkserver, interpreter start, output back to the host) is that
   * code. The code prints one line (so the output path is translated too) and leaves nothing
   * behind (no file, no process, no session); its output is dropped. A warm-up that fails
   * is only logged: the VM is as usable as one that was never warmed, and a dead VM is seen by
   * the caller's state check.
   */
  private async warmUp(sb: Sandbox, pack: PackImage, deadline: number): Promise<void> {
    if (sb.cancelled || sb.state !== 'creating' || !sb.agent) return;
    try {
      await sb.agent.run({ code: warmUpCode(pack), timeoutMs: Math.max(1000, Math.min(WARM_UP_TIMEOUT_MS, deadline - Date.now())) });
    } catch (e) {
      if (!sb.cancelled) sb.log.warn(`warm-up exec failed (the sandbox is used unwarmed): ${(e as Error).message}`);
    }
  }

  /**
   * Saves a ready sandbox's VM into `vmDir` (docs/snapshots.md, "Pause and resume"): the agent
   * is suspended first (a PING barrier: the guest has read all the host sent; frames from then on
   * are held back), then the backend saves. A pause ends the VM, and the host's side of the guest
   * is taken once the control stream has ended (every byte the guest sent before it stopped has
   * been handled); a fork (keepRunning) takes it while the guest is stopped and then lets both go
   * on. A save that fails leaves the sandbox running as it was.
   */
  async saveLive(sb: Sandbox, vmDir: string, o: { keepRunning: boolean; shared: boolean }): Promise<{ bytes: number; guest: GuestState }> {
    const agent = sb.agent!;
    const vm = sb.vm!;
    const take = (): GuestState => ({ agent: agent.suspendedState(), processes: sb.processes.save(), sessions: sb.sessions.save() });
    await agent.suspend(SUSPEND_TIMEOUT_MS);
    let taken: GuestState | undefined;
    if (!o.keepRunning) this.discarded.set(vm, 'paused');
    let bytes: number;
    try {
      ({ bytes } = await this.cfg.backend.snapshots!.save(vm, vmDir, {
        keepRunning: o.keepRunning,
        shared: o.shared,
        onStopped: o.keepRunning ? async () => { await agent.drain(); taken = take(); } : undefined,
      }));
    } catch (e) {
      this.discarded.delete(vm);
      agent.unsuspend();
      throw e;
    }
    if (o.keepRunning) {
      agent.unsuspend();
      return { bytes, guest: taken! };
    }
    await settlesWithin(agent.closed, 5000);
    const guest = take();
    sb.vm = undefined;
    sb.agent = undefined;
    sb.files = undefined;
    agent.abandon();
    rmSync(sb.runDir, { recursive: true, force: true });
    return { bytes, guest };
  }

  /**
   * Brings a saved sandbox back: its VM restored from `vmDir` with the boot files it was saved
   * with, a handshake (this moment's clock, fresh entropy, its own hostname, its limits), then its
   * channels adopted and its processes and sessions bound to them. Leaves it ready, or throws with
   * every resource freed (the saved state stays where it is).
   */
  async resumeSaved(sb: Sandbox, files: SavedFiles, vmDir: string, guest: GuestState, mode: 'resume' | 'fork'): Promise<void> {
    const deadline = Date.now() + this.cfg.bootTimeoutMs;
    try {
      await this.launch(sb, files, deadline, vmDir);
      sb.bootMode = mode;
      const owners: ChannelOwner[] = [...sb.processes.revive(guest.processes), ...sb.sessions.revive(guest.sessions, { reseed: mode === 'fork' })];
      const byChannel = new Map(owners.map((ow) => [ow.channel, ow]));
      // Without the connection (Firecracker's vsock reset) the guest ended what ran on it.
      const handles = this.cfg.backend.snapshots?.keepsConnections
        ? sb.agent!.adopt(guest.agent, (ch) => byChannel.get(ch)?.callbacks() ?? {})
        : new Map();
      for (const ow of owners) {
        const h = handles.get(ow.channel);
        if (h) ow.attach(h);
        else ow.lost(new EmberdError('AGENT_DISCONNECTED', this.cfg.backend.snapshots?.keepsConnections ? 'its channel was not in the saved state' : `the ${this.cfg.backend.name} backend resets the guest's connections when it saves a VM, which ended it`));
      }
      // A channel nothing owns (an exec a forced pause could not wait for) is ended.
      for (const [ch, h] of handles) if (!byChannel.has(ch)) h.signal(9);
      if (sb.state !== 'resuming') throw new EmberdError('AGENT_DISCONNECTED', `the sandbox became ${sb.state} while it resumed`);
    } catch (e) {
      this.stopReason(sb, 'boot_failed');
      if (sb.vm) await this.discardVm(sb, 'restore_failed');
      throw e;
    }
  }

  /** Says why the sandbox's VM is about to be stopped (the first reason given wins). */
  stopReason(sb: Sandbox, reason: VmEndReason): void {
    if (!this.stopping.has(sb)) this.stopping.set(sb, reason);
  }

  /**
   * Stops the VM (a graceful guest shutdown first when graceMs > 0) and removes the run dir. Runs
   * once per sandbox; later callers wait for the same teardown.
   */
  release(sb: Sandbox, graceMs: number): Promise<void> {
    sb.released ??= (async () => {
      void sb.sessions.closeAll(); // no new sessions; the VM's end takes the interpreters along
      void sb.ports.closeAll(); // listeners closed, connections reset
      if (sb.vm) {
        if (graceMs > 0 && sb.state !== 'failed') sb.agent?.shutdown();
        await sb.vm.stop(sb.state === 'failed' ? 0 : graceMs);
        sb.lastConsole = sb.vm.consoleTail(4096);
      }
      sb.agent?.close();
      rmSync(sb.runDir, { recursive: true, force: true });
      await sb.egress?.close(); // after the VMM: it holds the tap
    })();
    return sb.released;
  }

  /** Drops a VM that failed to become ready (or a golden), so the sandbox can try another way. */
  async discardVm(sb: Sandbox, reason?: VmEndReason): Promise<void> {
    const { vm, agent } = sb;
    if (vm && reason) this.discarded.set(vm, reason);
    sb.vm = undefined;
    sb.agent = undefined;
    agent?.close();
    await vm?.stop(0);
    rmSync(sb.runDir, { recursive: true, force: true });
  }

  /** Cold-boots (or, given a snapshot, restores) the VM and completes the handshake. */
  private async launch(sb: Sandbox, files: Partial<SavedFiles> & { packImage: string }, deadline: number, snapshot?: string): Promise<void> {
    const spec = this.bootSpec(sb, files, deadline);
    const vm = snapshot ? await this.cfg.backend.snapshots!.restore(spec, snapshot) : await this.cfg.backend.boot(spec);
    sb.vm = vm;
    sb.bootMode = snapshot ? 'restore' : 'cold';
    void vm.exited.then((exit) => {
      const reason = this.endReason(sb, vm);
      if (sb.vm === vm) this.onVmExit(sb, exit.reason);
      this.cfg.observer?.vmEnded(reason);
    });
    const agent = new AgentClient(vm.control, {
      onProtocolError: (code, message) => sb.log.warn({ code }, `guest protocol error: ${message}`),
    });
    sb.agent = agent;
    void agent.closed.then(() => this.onAgentClosed(sb, agent, vm));
    const ack = await sb.agent.helloUntil(deadline, { hostname: hostnameOf(sb.id), ...helloLimits(sb.limits) }, () => !sb.cancelled && (sb.state === 'creating' || sb.state === 'resuming'));
    sb.agentVersion = ack.agentVersion;
    sb.applied = { diskBytes: ack.diskBytes, pidsMax: ack.pidsMax };
  }

  /** The machine the sandbox asked for: identical for its golden, its restores and cold boots. */
  private bootSpec(sb: Sandbox, files: Partial<SavedFiles> & { packImage: string }, deadline: number): BootSpec {
    return {
      id: sb.id,
      runDir: sb.runDir,
      kernel: files.kernel ?? this.cfg.kernel,
      initramfs: files.initramfs ?? this.cfg.initramfs,
      packImage: files.packImage,
      machine: sb.machine,
      kernelArgs: sb.egress ? [sb.egress.kernelArg] : [],
      deadline,
      ...(sb.egress && { network: sb.egress.network }),
    };
  }

  /** Why `vm` ended, as it exits: on its own while in use, else what its stopper said. */
  private endReason(sb: Sandbox, vm: VmHandle): VmEndReason {
    if (sb.vm === vm && sb.state === 'ready' && !sb.released) return 'crashed';
    return this.discarded.get(vm) ?? this.stopping.get(sb) ?? (sb.state === 'creating' ? 'boot_failed' : 'crashed');
  }

  /** A VM that exits on its own while ready: the sandbox fails and its resources are freed. */
  private onVmExit(sb: Sandbox, reason: string): void {
    // While creating, the start path sees the closed control stream and releases; once a
    // teardown began (a delete, the pool or the daemon stopping it), the exit is expected.
    if (sb.state !== 'ready' || sb.released) return;
    sb.failure = { code: 'VMM_EXITED', message: `the VM stopped unexpectedly (${reason}); delete this sandbox and create a new one` };
    sb.log.warn({ code: sb.failure.code }, sb.failure.message);
    sb.state = 'failed';
    void this.release(sb, 0);
  }

  /**
   * The control channel of a ready sandbox closed without a teardown: the host ended it (the
   * guest broke the protocol), or the guest did. Usually the VM is dying and onVmExit says so;
   * if it is still running a moment later, its agent is gone or untrusted, so the sandbox fails.
   */
  private async onAgentClosed(sb: Sandbox, agent: AgentClient, vm: VmHandle): Promise<void> {
    const reason = agent.closeReason;
    if (reason?.code !== 'AGENT_PROTOCOL' && (await settlesWithin(vm.exited, AGENT_LOSS_GRACE_MS))) return;
    if (sb.agent !== agent || sb.state !== 'ready' || sb.released) return;
    sb.failure = { code: reason?.code ?? 'AGENT_DISCONNECTED', message: `${reason?.message ?? 'the guest closed its control channel'}; delete this sandbox and create a new one` };
    sb.log.warn({ code: sb.failure.code }, sb.failure.message);
    sb.state = 'failed';
    this.stopReason(sb, 'agent_lost');
    void this.release(sb, 0);
  }

  /** The stable code and message of a failed start, with the last console lines. */
  private startFailure(sb: Sandbox, e: unknown): { code: string; message: string } {
    const err = isEmberdError(e) && START_CODES.has(e.code) ? e : new EmberdError('BOOT_FAILED', `the sandbox failed to start: ${(e as Error).message}`);
    const tail = sb.consoleTail(1500).trim();
    const timedOut = err.code === 'BOOT_TIMEOUT' || err.code === 'AGENT_TIMEOUT';
    const message = timedOut
      ? `the guest did not answer within ${this.cfg.bootTimeoutMs} ms of boot (the host may be overloaded: raise --boot-timeout)${tail ? `; last console output: ${tail}` : ''}`
      : err.code === 'INVALID_REQUEST' ? err.message
        : `${err.message}${tail && !err.message.includes(tail) ? `; last console output: ${tail}` : ''}`;
    return { code: timedOut ? 'BOOT_TIMEOUT' : err.code, message };
  }
}
