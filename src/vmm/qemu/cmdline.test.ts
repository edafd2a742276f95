import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qemuArgs, kernelCommandLine } from './cmdline.ts';
import type { BootSpec } from '../backend.ts';

const spec: BootSpec = {
  id: 'sb_x', runDir: '/r', kernel: '/k/vmlinux', initramfs: '/k/init.cpio', packImage: '/p/python.sqfs',
  machine: { vcpus: 2, memoryMib: 512 }, kernelArgs: ['emberd.hostname=sb-x'], deadline: 0,
};
const paths = { controlSocket: '/r/control.sock', qmpSocket: '/r/qmp.sock' };

const flag = (args: string[], name: string) => args.filter((_, i) => args[i - 1] === name);

test('TCG guests get the timer settings that keep them from hanging', () => {
  const line = kernelCommandLine(spec, { accel: 'tcg', tscKhz: 2_100_000 });
  assert.match(line, /tsc_early_khz=2100000/);
  assert.match(line, /tsc=reliable/);
  assert.match(line, /emberd\.hostname=sb-x$/);
  assert.doesNotMatch(kernelCommandLine(spec, { accel: 'kvm' }), /tsc/);
});

test('the pack is a read-only virtio-blk disk and there is no network device', () => {
  const args = qemuArgs(spec, paths, { accel: 'tcg' });
  assert.deepEqual(flag(args, '-drive'), ['id=pack,file=/p/python.sqfs,format=raw,if=none,readonly=on']);
  assert.ok(flag(args, '-device').includes('virtio-blk-device,drive=pack'));
  assert.deepEqual(flag(args, '-nic'), ['none']);
  assert.ok(args.includes('-no-reboot'), 'a guest reboot must end QEMU');
  assert.deepEqual(flag(args, '-M'), ['microvm']);
  assert.deepEqual(flag(args, '-smp'), ['2']);
  assert.deepEqual(flag(args, '-m'), ['512M']);
});

test('the control channel is the emberd.control virtio-serial port on the given socket', () => {
  const args = qemuArgs(spec, paths, { accel: 'kvm' });
  assert.ok(flag(args, '-chardev').includes('socket,id=control,path=/r/control.sock,server=on,wait=off'));
  assert.ok(flag(args, '-device').includes('virtserialport,chardev=control,name=emberd.control'));
  assert.deepEqual(flag(args, '-accel'), ['kvm']);
  assert.deepEqual(flag(args, '-cpu'), ['host']);
});

test('a confined QEMU opens its boot files where it is told (inherited fds) and may not fork or exec', () => {
  const args = qemuArgs(spec, { ...paths, kernel: '/proc/self/fd/3', initramfs: '/proc/self/fd/4', pack: '/proc/self/fd/5' }, { accel: 'tcg', denySpawn: true });
  assert.deepEqual(flag(args, '-kernel'), ['/proc/self/fd/3']);
  assert.deepEqual(flag(args, '-initrd'), ['/proc/self/fd/4']);
  assert.deepEqual(flag(args, '-drive'), ['id=pack,file=/proc/self/fd/5,format=raw,if=none,readonly=on']);
  assert.deepEqual(flag(args, '-sandbox'), ['on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']);
  assert.deepEqual(flag(qemuArgs(spec, paths, { accel: 'tcg' }), '-sandbox'), ['on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny'], 'the test double still execs zstd');
});

test('shared-memory RAM: a file-backed object named like microvm\'s own RAM block, shared for the filler, private for a clone', () => {
  const clone = qemuArgs(spec, { ...paths, memory: { path: '/proc/self/fd/7', share: false } }, { accel: 'tcg' });
  assert.deepEqual(flag(clone, '-M'), ['microvm,memory-backend=microvm.ram']);
  assert.deepEqual(flag(clone, '-object'), ['memory-backend-file,id=microvm.ram,size=512M,mem-path=/proc/self/fd/7,share=off']);
  const filler = qemuArgs(spec, { ...paths, memory: { path: '/proc/self/fd/7', share: true } }, { accel: 'tcg' });
  assert.match(flag(filler, '-object')[0]!, /,share=on$/);
  const ro = qemuArgs(spec, { ...paths, memory: { path: '/proc/self/fd/7', share: false, readOnlyFile: true } }, { accel: 'tcg' });
  assert.match(flag(ro, '-object')[0]!, /,share=off,readonly=on,rom=off$/);
});

test('a spec with a network gets a virtio-net on its tap and no -nic none', () => {
  const args = qemuArgs({ ...spec, network: { netns: 'emberd-ab12-sb_x', tap: 'tap0', mac: '02:eb:00:00:00:02' } }, paths, { accel: 'tcg' });
  assert.deepEqual(flag(args, '-netdev'), ['tap,id=net0,ifname=tap0,script=no,downscript=no']);
  assert.ok(flag(args, '-device').includes('virtio-net-device,netdev=net0,mac=02:eb:00:00:00:02'));
  assert.deepEqual(flag(args, '-nic'), []);
});
