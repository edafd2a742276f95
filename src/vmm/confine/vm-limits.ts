// The cgroup v2 limits one VM's VMM process gets, from its machine shape. Pure, so the figures
// are pinned by tests and written down once (docs: "What confines QEMU").
import type { MachineConfig } from '../backend.ts';

/** The controllers these limits use; a host may offer any subset. */
export const LIMIT_CONTROLLERS = ['cpu', 'memory', 'pids'] as const;
export type LimitController = (typeof LIMIT_CONTROLLERS)[number];

export interface VmLimitInputs {
  machine: MachineConfig;
  /** TCG translates guest code into a buffer of its own, on top of guest RAM. */
  accel: 'kvm' | 'tcg';
  /** Host RAM in bytes: QEMU sizes its default TCG buffer from it. */
  hostMemBytes: number;
}

const MIB = 1024 * 1024;
/** QEMU's own heap, device state, thread stacks and migration buffers besides guest RAM. */
export const QEMU_OVERHEAD_MIB = 128;
/** QEMU 7.2's default TCG code buffer: 1 GiB, or an eighth of host RAM when that is less (tcg/region.c). */
export function tcgBufferMib(hostMemBytes: number): number {
  return Math.min(1024, Math.floor(hostMemBytes / 8 / MIB));
}

/** A limit file of the VM's cgroup and the value written to it. */
export interface LimitFile { controller: LimitController; file: string; value: string }

/**
 * - cpu.max: the VM's vCPUs' worth of CPU time per 100 ms period, QEMU's own threads included
 *   (the Firecracker jailer's formula, src/vmm/firecracker/jailer.ts).
 * - memory.max: guest RAM + QEMU's overhead + (TCG) its code buffer; beyond it the kernel reclaims
 *   the VM's page cache, then OOM-kills QEMU, never a neighbour.
 * - pids.max: QEMU is one process (`-sandbox spawn=deny`); its threads are the main loop, RCU,
 *   one per vCPU and up to 64 block-I/O workers; 128 + vCPUs leaves room and stops a thread bomb.
 */
export function vmLimits(i: VmLimitInputs): LimitFile[] {
  const memMib = i.machine.memoryMib + QEMU_OVERHEAD_MIB + (i.accel === 'tcg' ? tcgBufferMib(i.hostMemBytes) : 0);
  return [
    { controller: 'cpu', file: 'cpu.max', value: `${i.machine.vcpus * 100_000} 100000` },
    { controller: 'memory', file: 'memory.max', value: String(memMib * MIB) },
    { controller: 'pids', file: 'pids.max', value: String(128 + i.machine.vcpus) },
  ];
}
