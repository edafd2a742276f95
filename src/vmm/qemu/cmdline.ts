// Builds QEMU's argv for one microVM. Pure, so tests can pin it without starting QEMU.
import type { BootSpec } from '../backend.ts';

export interface QemuPaths {
  controlSocket: string;
  qmpSocket: string;
  /**
   * Where QEMU opens the boot files; default the spec's paths. A confined QEMU cannot reach
   * those paths (src/vmm/qemu/jail.ts): it gets them as inherited fds, /proc/self/fd/N.
   */
  kernel?: string;
  initramfs?: string;
  pack?: string;
  /**
   * Guest RAM in a file instead of anonymous memory (shared-memory snapshots, docs/snapshots.md):
   * share=true for the VM that fills the file (its writes land in it), false for a clone (a
   * private copy-on-write mapping: the file's pages are shared with every other clone until written).
   * readOnlyFile (QEMU 8.2+, `rom=off`): a clone opens the file read-only and still gets writable
   * private RAM; older QEMU opens it read-write even for a private mapping.
   */
  memory?: { path: string; share: boolean; readOnlyFile?: boolean };
}

/**
 * The id of the file-backed RAM object. It is the RAM block's name in the migration stream, so it
 * is the name microvm gives its default RAM: a stream saved from a VM with ordinary RAM loads into
 * a file-backed one and back.
 */
export const RAM_ID = 'microvm.ram';

export interface QemuOptions {
  accel: 'kvm' | 'tcg';
  /** Host TSC kHz; passed to TCG guests as tsc_early_khz to avoid a boot hang. */
  tscKhz?: number;
  /**
   * Seccomp also denies fork and exec (`spawn=deny`): QEMU then cannot start helpers, so
   * snapshots cannot use `exec:` migration URIs (the backend uses a socket and an fd instead).
   */
  denySpawn?: boolean;
}

/** Kernel words every emberd guest gets; the backend adds the timer ones under TCG. */
export const BASE_KERNEL_ARGS = [
  'console=ttyS0', 'reboot=t', 'panic=-1', 'quiet', 'cryptomgr.notests', 'pci=off', 'i8042.noaux', '8250.nr_uarts=1',
];

export function kernelCommandLine(spec: BootSpec, opts: QemuOptions): string {
  const words = [...BASE_KERNEL_ARGS];
  if (opts.accel === 'tcg') {
    words.push('tsc=reliable', 'no_timer_check');
    if (opts.tscKhz) words.push(`tsc_early_khz=${opts.tscKhz}`);
  }
  return [...words, ...spec.kernelArgs].join(' ');
}

export function qemuArgs(spec: BootSpec, paths: QemuPaths, opts: QemuOptions): string[] {
  return [
    '-name', `emberd-${spec.id}`,
    '-M', paths.memory ? `microvm,memory-backend=${RAM_ID}` : 'microvm',
    ...(paths.memory ? ['-object', `memory-backend-file,id=${RAM_ID},size=${spec.machine.memoryMib}M,mem-path=${paths.memory.path},share=${paths.memory.share ? 'on' : 'off'}${paths.memory.readOnlyFile ? ',readonly=on,rom=off' : ''}`] : []),
    '-accel', opts.accel,
    '-cpu', opts.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(spec.machine.vcpus),
    '-m', `${spec.machine.memoryMib}M`,
    '-nodefaults', '-no-user-config', '-display', 'none',
    // -nodefaults drops the serial backend: the console goes to stdout, which the daemon keeps a bounded tail of.
    '-serial', 'stdio',
    // reboot(2) in the guest (SHUTDOWN, panic=-1) ends the QEMU process instead of restarting the VM.
    '-no-reboot',
    // Seccomp: no privilege changes, no obsolete syscalls, no resource-control calls (and, when
    // asked, no fork or exec).
    '-sandbox', `on,obsolete=deny,elevateprivileges=deny,${opts.denySpawn ? 'spawn=deny,' : ''}resourcecontrol=deny`,
    '-kernel', paths.kernel ?? spec.kernel,
    '-initrd', paths.initramfs ?? spec.initramfs,
    '-append', kernelCommandLine(spec, opts),
    '-drive', `id=pack,file=${paths.pack ?? spec.packImage},format=raw,if=none,readonly=on`,
    '-device', 'virtio-blk-device,drive=pack',
    '-device', 'virtio-serial-device,max_ports=2',
    '-chardev', `socket,id=control,path=${paths.controlSocket},server=on,wait=off`,
    '-device', 'virtserialport,chardev=control,name=emberd.control',
    '-qmp', `unix:${paths.qmpSocket},server=on,wait=off`,
    // No network device unless the sandbox asked for egress (docs/network.md): then a virtio-net
    // on the tap its netns holds, opened by QEMU before it chroots.
    ...(spec.network
      ? ['-netdev', `tap,id=net0,ifname=${spec.network.tap},script=no,downscript=no`, '-device', `virtio-net-device,netdev=net0,mac=${spec.network.mac}`]
      : ['-nic', 'none']),
  ];
}
