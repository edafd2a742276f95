// The one interface every VMM backend implements. The sandbox manager only talks to this; the
// conformance suite (src/vmm/conformance.ts) runs the same cases against every implementation.
import type { Duplex } from 'node:stream';

/** `host-agent` is the test backend (src/vmm/host-agent/): no VM, never selectable by flags. */
export type BackendName = 'qemu' | 'firecracker' | 'host-agent';

export interface MachineConfig {
  vcpus: number;
  memoryMib: number;
}

/**
 * A network device for the guest (sandboxes created with `network`; src/sandbox/egress/): a tap
 * that already exists in `netns` (a named netns, /run/netns/<netns>) and that the VMM's uid may
 * open. The VMM joins that netns instead of a new empty one.
 */
export interface GuestNetwork {
  netns: string;
  tap: string;
  mac: string;
}

export interface BootSpec {
  /** Sandbox id; used for names and the guest hostname. */
  id: string;
  /** Private directory for this VM's sockets; the backend removes what it creates there. */
  runDir: string;
  /** Uncompressed ELF vmlinux (PVH-capable on x86_64). */
  kernel: string;
  initramfs: string;
  /** Read-only squashfs language pack, attached as the first virtio-blk disk. */
  packImage: string;
  machine: MachineConfig;
  /** Extra kernel command-line words (the backend adds its own console/timer settings). */
  kernelArgs: string[];
  /** Epoch ms by which the control stream must be connected. */
  deadline: number;
  /** Absent: no network device at all (the default). */
  network?: GuestNetwork;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Human explanation, e.g. what a Firecracker exit code means. */
  reason: string;
}

export interface VmResources {
  pid: number;
  /** Files and sockets the VM holds on the host; all gone after stop(). */
  paths: string[];
}

export interface VmHandle {
  readonly pid: number;
  /** Byte stream to the guest agent's control channel, already connected. */
  readonly control: Duplex;
  /** Settles when the VMM process has exited and its files are removed. Never rejects. */
  readonly exited: Promise<VmExit>;
  /** Last bytes the guest wrote to its serial console. */
  consoleTail(maxBytes?: number): string;
  resources(): VmResources;
  /**
   * Ends the VM: waits up to graceMs for it to exit by itself (after a guest SHUTDOWN), then asks
   * the VMM to quit, then SIGKILLs it. Removes every file the backend created. Idempotent.
   */
  stop(graceMs: number): Promise<VmExit>;
  /** A clone's restore path (SnapshotSupport.restore); undefined for a cold boot. */
  readonly restoredFrom?: RestorePath;
}

/**
 * `shared-memory`: the clone maps the golden's RAM file copy-on-write and loaded only device state;
 * `stream`: the whole saved state was loaded (the fallback where the shared file cannot be used).
 */
export type RestorePath = 'shared-memory' | 'stream';

export interface BackendInfo {
  name: BackendName;
  binary: string;
  version: string;
  /** e.g. "kvm" or "tcg" for QEMU. */
  accel: string;
  /** Why this backend/acceleration was chosen; shown by the daemon at start and in GET /. */
  reason: string;
  /** Notes a user should know, e.g. the software-emulation warning. */
  warnings: string[];
}

export interface Backend {
  readonly name: BackendName;
  readonly info: BackendInfo;
  /** Boots a VM and returns once its control stream is connected (the guest may still be starting). */
  boot(spec: BootSpec): Promise<VmHandle>;
  /** Whether boot() attaches spec.network (a virtio-net on the netns's tap); else it must not be given. */
  readonly network?: boolean;
  /** Present when the backend can save a running VM and start clones of it. */
  readonly snapshots?: SnapshotSupport;
}

export interface SaveOptions {
  /** Resume the VM after the save instead of ending it. */
  keepRunning?: boolean;
  /**
   * Also prepare the shared-memory path (prepareShared) when the backend has one: goldens and
   * forks, whose state many clones start from (default true); a pause has one resume and skips it.
   */
  shared?: boolean;
  /** Called once the guest is stopped and before its state is written (a fork takes the host's side of it then). */
  onStopped?: () => Promise<void>;
}

export interface SnapshotSupport {
  /**
   * Everything besides the images that a saved state depends on (VMM and its version, its
   * acceleration, the snapshot format): part of the key a golden snapshot is stored under.
   */
  readonly fingerprint: string;
  /**
   * Whether a saved VM keeps the guest's control connection: QEMU's virtio-serial state is saved
   * with the guest, so its processes and sessions go on; Firecracker resets vsock connections at
   * every snapshot (the guest then ends what ran on them), so only memory and files carry over,
   * and a fork would cut the parent off its agent.
   */
  readonly keepsConnections: boolean;
  /**
   * Pauses `vm`, writes its whole state into `dir` (created), and ends the VM; with keepRunning
   * the VM goes on running afterwards instead (a fork), on the same control stream.
   */
  save(vm: VmHandle, dir: string, opts?: SaveOptions): Promise<{ bytes: number }>;
  /**
   * Starts a clone of the VM saved in `dir`, running, with its own sockets under spec.runDir;
   * `spec` must describe the same machine the snapshot was taken from. Returns like boot().
   */
  restore(spec: BootSpec, dir: string): Promise<VmHandle>;
  /**
   * Backends with a shared-memory restore path: the file clones share, for the snapshot in `dir`
   * (tests remove or corrupt it to check the fallback).
   */
  sharedMemoryFile?(dir: string): string;
  /**
   * Brings the snapshot's shared-memory path up if it is not (a restore that had to fall back
   * starts this in the background; concurrent callers share one run). Resolves when done, never rejects.
   */
  prepareShared?(spec: BootSpec, dir: string): Promise<void>;
}
