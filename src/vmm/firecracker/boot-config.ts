// The API requests that configure and start one microVM. Pure, so tests can validate every one
// against the official spec without starting anything; the driver sends exactly these, in order.
import type { BootSpec } from '../backend.ts';
import type { ApiRequest } from './api-spec.ts';

/** The guest's vsock address (CID 0-2 are reserved) and the port emberd-init listens on. */
export const GUEST_CID = 3;
export const AGENT_VSOCK_PORT = 1024;

/**
 * Kernel words every emberd guest gets under Firecracker. Setting boot_args replaces Firecracker's
 * default (`reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd
 * swiotlb=noforce`, docs/kernel-policy.md), so we restate what we keep and change:
 *  - console=ttyS0 and 8250.nr_uarts=1: the serial console (Firecracker's stdout) is our boot log;
 *  - no `nomodule`: emberd-init loads virtio_mmio, virtio_blk, squashfs, overlay and vsock modules;
 *  - reboot=k: a guest reboot(2) (SHUTDOWN) resets through the i8042, which ends Firecracker;
 *  - no i8042.nopnp: with ACPI it would break SendCtrlAltDel (Firecracker PR #5074);
 *  - pci=off: Firecracker appends it anyway without --enable-pci.
 */
export const FC_KERNEL_ARGS = [
  'console=ttyS0', 'reboot=k', 'panic=1', 'pci=off',
  'i8042.noaux', 'i8042.nomux', 'i8042.dumbkbd', '8250.nr_uarts=1', 'swiotlb=noforce',
  'quiet', 'cryptomgr.notests',
];

export function firecrackerBootArgs(spec: Pick<BootSpec, 'kernelArgs'>): string {
  return [...FC_KERNEL_ARGS, ...spec.kernelArgs].join(' ');
}

/** Paths as the Firecracker process sees them: host paths, or chroot-relative under the jailer. */
export interface FcGuestPaths {
  kernel: string;
  initramfs: string;
  pack: string;
  /** relative to Firecracker's working directory (its run dir) when not jailed: see process.ts (placeVm) */
  vsockUds: string;
  /** when set, PUT /logger with this (existing) file */
  logFile?: string;
  /** when set, PUT /metrics with this (existing) file */
  metricsFile?: string;
}

/** PUT /logger and /metrics, when wanted: first, and once per process (boot or restore). */
function loggingRequests(p: Pick<FcGuestPaths, 'logFile' | 'metricsFile'>): ApiRequest[] {
  const reqs: ApiRequest[] = [];
  if (p.logFile) reqs.push({ method: 'PUT', path: '/logger', body: { log_path: p.logFile, level: 'Warning', show_level: true, show_log_origin: false } });
  if (p.metricsFile) reqs.push({ method: 'PUT', path: '/metrics', body: { metrics_path: p.metricsFile } });
  return reqs;
}

/** Every configuration request, in the order they are sent; InstanceStart follows them. */
export function bootRequests(spec: Pick<BootSpec, 'kernelArgs' | 'machine' | 'network'>, p: FcGuestPaths): ApiRequest[] {
  const reqs = loggingRequests(p);
  reqs.push(
    // PUT replaces every optional field with its default, so state them all.
    { method: 'PUT', path: '/machine-config', body: { vcpu_count: spec.machine.vcpus, mem_size_mib: spec.machine.memoryMib, smt: false, track_dirty_pages: false } },
    { method: 'PUT', path: '/boot-source', body: { kernel_image_path: p.kernel, initrd_path: p.initramfs, boot_args: firecrackerBootArgs(spec) } },
    // The pack is /dev/vda in the guest but not the root device: the initramfs mounts it (as the
    // read-only overlay lower layer), so Firecracker must not append root=/dev/vda.
    { method: 'PUT', path: '/drives/pack', body: { drive_id: 'pack', path_on_host: p.pack, is_root_device: false, is_read_only: true } },
    { method: 'PUT', path: '/vsock', body: { guest_cid: GUEST_CID, uds_path: p.vsockUds } },
  );
  // Egress (docs/network.md): the tap of the sandbox's netns, which Firecracker must run in
  // (the jailer's --netns). No rate limiter here: the netns's tc qdiscs shape both ways.
  if (spec.network) reqs.push(networkInterfaceRequest(spec.network));
  return reqs;
}

/** PUT /network-interfaces/eth0: the guest's one NIC on the netns's tap. */
export function networkInterfaceRequest(n: NonNullable<BootSpec['network']>): ApiRequest {
  return { method: 'PUT', path: '/network-interfaces/eth0', body: { iface_id: 'eth0', host_dev_name: n.tap, guest_mac: n.mac } };
}

export const INSTANCE_START: ApiRequest = { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } };
export const SEND_CTRL_ALT_DEL: ApiRequest = { method: 'PUT', path: '/actions', body: { action_type: 'SendCtrlAltDel' } };
export const GET_VERSION: ApiRequest = { method: 'GET', path: '/version' };

/** Firecracker's --id: 1-64 alphanumerics and '-' (sandbox ids have '_'). */
export function firecrackerInstanceId(sandboxId: string): string {
  return sandboxId.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 64) || 'emberd';
}

// ---- snapshots (docs/snapshots.md "Firecracker") ----

/** Files of a Firecracker golden snapshot, in its directory (and, under the jailer, in each jail root). */
export const SNAPSHOT_FILES = {
  /** snapshot_path: device, vCPU and KVM state (Firecracker's versioned "microVM state" file) */
  state: 'vmstate',
  /** mem_file_path / mem_backend.backend_path: guest memory; a clone maps it MAP_PRIVATE, so it must never change */
  memory: 'memory',
  /** emberd's own record: Firecracker version, snapshot format, jailed or not, the machine */
  meta: 'firecracker-snapshot.json',
} as const;

/** Pause the vCPUs: the only state `PUT /snapshot/create` accepts. */
export const PAUSE_VM: ApiRequest = { method: 'PATCH', path: '/vm', body: { state: 'Paused' } };
/** After a snapshot of a VM that goes on (a fork): Firecracker resumes a paused VM on request. */
export const RESUME_VM: ApiRequest = { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } };

/** Paths as the Firecracker process sees them (chroot-relative under the jailer). */
export interface FcSnapshotPaths {
  snapshotPath: string;
  memFilePath: string;
}

/** Save: pause, then a full snapshot (a diff one needs a base; ours are written once). */
export function saveRequests(p: FcSnapshotPaths): ApiRequest[] {
  return [
    PAUSE_VM,
    { method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'Full', snapshot_path: p.snapshotPath, mem_file_path: p.memFilePath } },
  ];
}

/**
 * Restore in a fresh process: logger/metrics (the only resources Firecracker accepts before a
 * load), then `PUT /snapshot/load`, resumed at once. `mem_backend` rather than the deprecated
 * `mem_file_path`. `vsockUdsOverride` (1.16+ only) names this clone's own vsock socket; without
 * it Firecracker binds the path recorded in the snapshot, which is why emberd records a path
 * that means something different in every clone (relative to the process's working directory, or
 * chroot-relative under the jailer). `clock_realtime` is left off: it needs host Linux >= 5.16 and
 * a failed load ends the process; the guest clock is set from the host in the first HELLO instead.
 */
export function restoreRequests(p: FcSnapshotPaths & Pick<FcGuestPaths, 'logFile' | 'metricsFile'> & { vsockUdsOverride?: string }): ApiRequest[] {
  const reqs = loggingRequests(p);
  const load: Record<string, unknown> = {
    snapshot_path: p.snapshotPath,
    mem_backend: { backend_type: 'File', backend_path: p.memFilePath },
    track_dirty_pages: false,
    resume_vm: true,
  };
  if (p.vsockUdsOverride !== undefined) load.vsock_override = { uds_path: p.vsockUdsOverride };
  reqs.push({ method: 'PUT', path: '/snapshot/load', body: load });
  return reqs;
}
