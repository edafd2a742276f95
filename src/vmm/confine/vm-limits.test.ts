import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QEMU_OVERHEAD_MIB, tcgBufferMib, vmLimits } from './vm-limits.ts';

const GIB = 1024 ** 3;
const value = (l: ReturnType<typeof vmLimits>, file: string) => l.find((x) => x.file === file)?.value;

test('cpu.max is the vCPUs\' worth of time per 100 ms period', () => {
  assert.equal(value(vmLimits({ machine: { vcpus: 1, memoryMib: 256 }, accel: 'kvm', hostMemBytes: 8 * GIB }), 'cpu.max'), '100000 100000');
  assert.equal(value(vmLimits({ machine: { vcpus: 4, memoryMib: 256 }, accel: 'kvm', hostMemBytes: 8 * GIB }), 'cpu.max'), '400000 100000');
});

test('memory.max is guest RAM + QEMU overhead, plus the TCG code buffer under TCG', () => {
  const mib = (accel: 'kvm' | 'tcg', host: number) => Number(value(vmLimits({ machine: { vcpus: 1, memoryMib: 512 }, accel, hostMemBytes: host }), 'memory.max')) / 2 ** 20;
  assert.equal(mib('kvm', 24 * GIB), 512 + QEMU_OVERHEAD_MIB);
  assert.equal(mib('tcg', 24 * GIB), 512 + QEMU_OVERHEAD_MIB + 1024, 'QEMU 7.2 sizes its buffer 1 GiB on a big host');
  assert.equal(mib('tcg', 4 * GIB), 512 + QEMU_OVERHEAD_MIB + 512, 'and host RAM / 8 on a small one');
  assert.equal(tcgBufferMib(2 * GIB), 256);
});

test('pids.max leaves room for QEMU\'s threads and nothing else', () => {
  assert.equal(value(vmLimits({ machine: { vcpus: 2, memoryMib: 256 }, accel: 'tcg', hostMemBytes: 8 * GIB }), 'pids.max'), '130');
});

test('every limit names its controller', () => {
  assert.deepEqual(vmLimits({ machine: { vcpus: 1, memoryMib: 256 }, accel: 'kvm', hostMemBytes: GIB }).map((l) => `${l.controller}:${l.file}`), ['cpu:cpu.max', 'memory:memory.max', 'pids:pids.max']);
});
