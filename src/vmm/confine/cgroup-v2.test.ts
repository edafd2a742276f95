import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createVmCgroup, describeCgroups, detectCgroups, isStaleCgroup, reapEmptyCgroups, type CgroupHost } from './cgroup-v2.ts';
import { vmLimits } from './vm-limits.ts';

const HYBRID = [
  'tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0',
  'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
  'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
].join('\n');
const UNIFIED = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0';

test('a v1 hybrid whose cgroup2 offers only hugetlb: cgroups without limits, and the words say why', () => {
  const p = detectCgroups(HYBRID, (m) => (m === '/sys/fs/cgroup/unified' ? 'hugetlb\n' : undefined), true);
  assert.ok(p.host);
  assert.equal(p.host.parent, '/sys/fs/cgroup/unified/emberd');
  assert.deepEqual(p.host.limited, []);
  assert.deepEqual(p.host.missing, ['cpu', 'memory', 'pids']);
  assert.match(describeCgroups(p), /without limits \(cgroup2 at \/sys\/fs\/cgroup\/unified offers hugetlb, not cpu, memory, pids\)/);
});

test('a unified host with the controllers: every limit', () => {
  const p = detectCgroups(UNIFIED, () => 'cpuset cpu io memory hugetlb pids rdma misc\n', true);
  assert.deepEqual(p.host?.limited, ['cpu', 'memory', 'pids']);
  assert.deepEqual(p.host?.missing, []);
  assert.equal(describeCgroups(p), 'cgroup v2 per VM under /sys/fs/cgroup/emberd (cpu, memory, pids limits)');
});

test('no cgroup: no cgroup2 mount, a read-only one, or emberd not root', () => {
  assert.equal(detectCgroups(HYBRID.split('\n').slice(0, 2).join('\n'), () => '', true).why, 'no cgroup2 hierarchy is mounted');
  assert.match(detectCgroups('cgroup2 /sys/fs/cgroup cgroup2 ro,relatime 0 0', () => 'memory', true).why!, /read-only/);
  assert.match(detectCgroups(UNIFIED, () => 'memory', false).why!, /not root/);
});

/** A directory standing in for a cgroup2 mount: the files emberd reads and writes, nothing the kernel would add. */
function fakeMount(controllers: string): CgroupHost & { cleanup(): void } {
  const mount = mkdtempSync(join(tmpdir(), 'emb-cg-'));
  writeFileSync(join(mount, 'cgroup.controllers'), controllers);
  writeFileSync(join(mount, 'cgroup.subtree_control'), '');
  mkdirSync(join(mount, 'emberd'));
  writeFileSync(join(mount, 'emberd', 'cgroup.subtree_control'), '');
  const p = detectCgroups(`cgroup2 ${mount} cgroup2 rw 0 0`, () => controllers, true);
  return { ...p.host!, cleanup: () => rmSync(mount, { recursive: true, force: true }) };
}

test('a VM cgroup gets the limits of the controllers offered, which are enabled for the parent', async () => {
  const host = fakeMount('memory pids');
  try {
    const cg = await createVmCgroup(host, 'qemu-abc-sb_1', vmLimits({ machine: { vcpus: 2, memoryMib: 256 }, accel: 'kvm', hostMemBytes: 2 ** 33 }));
    assert.equal(cg.dir, join(host.parent, 'qemu-abc-sb_1'));
    assert.equal(cg.procs, join(cg.dir, 'cgroup.procs'));
    assert.deepEqual(cg.applied.map((l) => l.file), ['memory.max', 'pids.max']);
    assert.equal(readFileSync(join(cg.dir, 'memory.max'), 'utf8'), String((256 + 128) * 2 ** 20));
    assert.equal(readFileSync(join(cg.dir, 'pids.max'), 'utf8'), '130');
    assert.equal(existsSync(join(cg.dir, 'cpu.max')), false, 'no cpu controller, no cpu.max');
    // each +controller is its own write; the fake file keeps the last one
    assert.equal(readFileSync(join(host.parent, 'cgroup.subtree_control'), 'utf8'), '+pids');
  } finally {
    host.cleanup();
  }
});

test('names that could leave the parent are refused', async () => {
  const host = fakeMount('');
  try {
    for (const bad of ['../x', 'a/b', '.hidden', '']) await assert.rejects(createVmCgroup(host, bad, []), /invalid cgroup name/);
  } finally {
    host.cleanup();
  }
});

test('reaping removes the empty cgroups it is asked to, never a busy one', () => {
  const host = fakeMount('');
  try {
    for (const n of ['qemu-aaaa-sb_1', 'qemu-aaaa-sb_2', 'qemu-bbbb-sb_3', 'qemu-cccc-sb_4']) mkdirSync(join(host.parent, n));
    writeFileSync(join(host.parent, 'qemu-aaaa-sb_2', 'cgroup.procs'), '123'); // stands for a busy cgroup
    const old = new Date(Date.now() - 120_000);
    utimesSync(join(host.parent, 'qemu-cccc-sb_4'), old, old);
    assert.equal(reapEmptyCgroups(host, (name, ageMs) => isStaleCgroup(name, ageMs, 'qemu-aaaa-', 'qemu-')), 2);
    assert.deepEqual(readdirSync(host.parent).filter((n) => n.startsWith('qemu-')).sort(), ['qemu-aaaa-sb_2', 'qemu-bbbb-sb_3'], 'the busy one and another daemon\'s fresh one stay');
  } finally {
    host.cleanup();
  }
});
