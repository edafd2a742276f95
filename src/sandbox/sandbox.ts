// One sandbox: its state machine and what it holds. The manager drives transitions.
import type { EgressRequest, EgressView, SandboxEgress } from './egress/egress.ts';
import type { AgentClient } from '../agent/client.ts';
import type { EmberdError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { BackendName, MachineConfig, VmHandle } from '../vmm/backend.ts';
import type { SandboxFiles } from './files.ts';
import { ProcessTable } from './processes.ts';
import type { SavedFiles } from './saved.ts';
import { SessionRegistry } from './sessions.ts';
import { PortForwards } from './ports.ts';

/**
 * creating -> ready -> destroying -> gone
 *     \        | ^ \
 *      \       | |  `-> failed   (boot error, or the VMM died; resources already freed)
 *       \  pausing resuming
 *        \     v   |
 *         \   paused ---> failed (its saved state cannot be resumed)
 *          `-> failed
 */
export type SandboxState = 'creating' | 'ready' | 'pausing' | 'paused' | 'resuming' | 'destroying' | 'gone' | 'failed';

/** How a sandbox's VM came up last. */
export type BootMode = 'cold' | 'restore' | 'pool' | 'resume' | 'fork';

export interface SandboxView {
  id: string;
  state: SandboxState;
  language_pack: string;
  backend: BackendName;
  created_at: string;
  ready_at: string | null;
  boot_ms: number | null;
  boot_mode: BootMode | null;
  vcpus: number;
  memory_mib: number;
  /** The writable disk (the tmpfs overlay upper), in effect in the guest (null: not yet known). */
  disk_mib: number | null;
  /** The most processes and threads the sandbox's execs may have, in effect in the guest. */
  pids_max: number | null;
  /** Variables every exec inherits (an exec's own env wins). */
  env: Record<string, string>;
  /** When the sandbox will be destroyed (null: no deadline). */
  expires_at: string | null;
  timeout_s: number | null;
  vmm_pid: number | null;
  agent_version: string | null;
  error: { code: string; message: string } | null;
  /** What happens at the deadline: destroyed, or paused (then kept for --paused-retention). */
  on_timeout: 'destroy' | 'pause';
  /** Calls on a paused sandbox resume it first (else they answer 409 SANDBOX_PAUSED). */
  auto_resume: boolean;
  /** While paused: when, how big on disk, and until when it is kept. */
  paused: { paused_at: string; bytes: number; pause_ms: number; expires_at: string | null } | null;
  /** The sandbox it was forked from. */
  forked_from: string | null;
  /** Egress (docs/network.md "Egress"): null for a sandbox created without `network` (no network device). */
  network: EgressView | null;
}

/** Limits the guest applies at each handshake (docs/protocol.md, HELLO). */
export interface GuestLimits {
  diskMib?: number;
  pidsMax?: number;
}

/** The HELLO fields for `limits`. */
export function helloLimits(limits: GuestLimits): { diskBytes?: number; pidsMax?: number } {
  return {
    ...(limits.diskMib !== undefined && { diskBytes: limits.diskMib * 1048576 }),
    ...(limits.pidsMax !== undefined && { pidsMax: limits.pidsMax }),
  };
}

export class Sandbox {
  readonly id: string;
  readonly pack: string;
  readonly backend: BackendName;
  readonly runDir: string;
  createdAt = new Date();
  state: SandboxState = 'creating';
  /** How the VM came up: a cold boot, a restore of the pack's golden snapshot, or the warm pool. */
  bootMode: BootMode | undefined;
  readyAt: Date | undefined;
  vm: VmHandle | undefined;
  agent: AgentClient | undefined;
  agentVersion: string | undefined;
  failure: { code: string; message: string } | undefined;
  /** Console tail kept after the VM is gone, so a failed sandbox can still be explained. */
  lastConsole = '';
  /** Settles when creation has finished one way or the other. */
  created: Promise<void> = Promise.resolve();
  /** Set by destroy() while creating: the boot stops at its next step. */
  cancelled = false;
  /** Aborted by destroy() while creating: a create waiting for a boot slot stops waiting. */
  readonly abort = new AbortController();
  /** Why a create was refused before it booted (TOO_BUSY), with its Retry-After. */
  refusal: EmberdError | undefined;
  /** The VM teardown, once started (by destroy, a failed boot, or the VM dying). */
  released: Promise<void> | undefined;
  /** The whole destroy, once started: concurrent DELETEs share it. */
  destroying: Promise<void> | undefined;
  /** Background processes started with `background: true`. */
  readonly processes = new ProcessTable();
  /** on_timeout and auto_resume of its create. */
  onTimeout: 'destroy' | 'pause' = 'destroy';
  autoResume = true;
  /** While paused: its directory in the paused store and what the pause measured. */
  paused: { dir: string; pausedAt: Date; bytes: number; pauseMs: number; expiresAt: Date | undefined; timer?: NodeJS.Timeout } | undefined;
  /** A pause or resume under way: concurrent calls share it. */
  transition: Promise<void> | undefined;
  forkedFrom: string | undefined;
  /** The boot files its VM came from when not the images' current ones (a resumed or forked sandbox's links). */
  bootFiles: SavedFiles | undefined;
  /** Persistent interpreter sessions (`"session": name` on exec). */
  readonly sessions: SessionRegistry;
  /** Ports exposed to the host (ports.ts); closed with the VM, kept across a pause. */
  readonly ports: PortForwards;
  /** File operations on the agent, made once the sandbox is ready. */
  files: SandboxFiles | undefined;
  /** Every line about this sandbox carries its id. */
  readonly log: Logger;
  /** Its lifetime: the last timeout_s asked, the deadline it gave, and the timer. */
  timeoutS: number | undefined;
  expiresAt: Date | undefined;
  expiryTimer: NodeJS.Timeout | undefined;

  /** The VM it runs on. */
  readonly machine: MachineConfig;
  /** Variables every exec of the sandbox inherits. */
  readonly env: Record<string, string>;
  /** The guest-side limits asked for (undefined: the guest's default), sent in every HELLO. */
  readonly limits: GuestLimits;
  /** Its network, when created with `network` (src/sandbox/egress/); closed with the VM. */
  egress: SandboxEgress | undefined;
  /** What its create asked for with `network`: a resume or a fork builds the network again from it. */
  egressRequest: EgressRequest | undefined;
  /** What the guest reported in effect at the last handshake. */
  applied: { diskBytes?: number; pidsMax?: number } = {};

  constructor(id: string, pack: string, backend: BackendName, runDir: string, log: Logger, shape: { machine: MachineConfig; env: Record<string, string>; limits?: GuestLimits }) {
    this.id = id;
    this.pack = pack;
    this.backend = backend;
    this.runDir = runDir;
    this.log = log;
    this.machine = shape.machine;
    this.env = shape.env;
    this.limits = shape.limits ?? {};
    this.ports = new PortForwards(id, log);
    this.sessions = new SessionRegistry(pack, () => (this.state === 'ready' ? this.agent : undefined), this.env);
  }

  consoleTail(maxBytes = 4096): string {
    const text = this.vm ? this.vm.consoleTail(maxBytes) : this.lastConsole;
    return text.length > maxBytes ? text.slice(text.length - maxBytes) : text;
  }

  view(): SandboxView {
    return {
      id: this.id,
      state: this.state,
      language_pack: this.pack,
      backend: this.backend,
      created_at: this.createdAt.toISOString(),
      ready_at: this.readyAt?.toISOString() ?? null,
      boot_ms: this.readyAt ? this.readyAt.getTime() - this.createdAt.getTime() : null,
      boot_mode: this.bootMode ?? null,
      vcpus: this.machine.vcpus,
      memory_mib: this.machine.memoryMib,
      disk_mib: this.applied.diskBytes === undefined ? null : Math.round(this.applied.diskBytes / 1048576),
      pids_max: this.applied.pidsMax ?? null,
      env: this.env,
      expires_at: this.expiresAt?.toISOString() ?? null,
      timeout_s: this.timeoutS ?? null,
      vmm_pid: this.vm && (this.state === 'ready' || this.state === 'creating') ? this.vm.pid : null,
      agent_version: this.agentVersion ?? null,
      error: this.failure ?? null,
      on_timeout: this.onTimeout,
      auto_resume: this.autoResume,
      paused: this.paused && this.state === 'paused'
        ? { paused_at: this.paused.pausedAt.toISOString(), bytes: this.paused.bytes, pause_ms: this.paused.pauseMs, expires_at: this.paused.expiresAt?.toISOString() ?? null }
        : null,
      forked_from: this.forkedFrom ?? null,
      network: this.egress?.view() ?? null,
    };
  }
}
