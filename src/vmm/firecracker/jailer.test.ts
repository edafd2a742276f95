// Jailer argv, paths, cgroup detection, chroot preparation and cleanup. The jailer itself needs
// root, KVM and a Firecracker binary; none is here, so it is never run (docs/firecracker.md). The
// driver's jailed path runs against a stand-in jailer in firecracker-backend.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cgroupDir, cgroupLimits, checkJailPathLengths, detectCgroupV2, jailerArgs, jailIdFor, jailLayout, jailTag, prepareJail, processHasArgs, reapStaleJails, removeJail,
  type JailerOptions,
} from './jailer.ts';
import { isFirecrackerError } from './errors.ts';

const opts: JailerOptions = { binary: '/usr/local/bin/jailer', uid: 123, gid: 100, chrootBase: '/srv/jailer' };
const cg = { mount: '/sys/fs/cgroup', controllers: new Set(['cpuset', 'cpu', 'io', 'memory', 'pids']) };

test('jail ids: tagged by run dir, valid for the jailer', () => {
  const id = jailIdFor('sb_0123456789abcdefghij', '/run/emberd');
  assert.match(id, /^e[0-9a-f]{8}-sb-0123456789abcdefghij$/);
  assert.ok(id.length <= 64);
  assert.equal(id.startsWith(jailTag('/run/emberd')), true);
  assert.notEqual(jailTag('/run/emberd'), jailTag('/tmp/other'));
  assert.throws(() => jailLayout(opts, '/usr/bin/firecracker', 'bad_id'), (e) => isFirecrackerError(e, 'FIRECRACKER_JAILER'));
  assert.throws(() => jailLayout(opts, '/usr/bin/firecracker', 'x'.repeat(65)));
});

test('jailer argv: uid/gid, chroot base, cgroup v2 limits, new PID namespace, chroot-relative API socket', () => {
  const layout = jailLayout(opts, '/usr/local/bin/firecracker', 'e1-sb-x');
  const limits = cgroupLimits({ vcpus: 2, memoryMib: 256 }, cg);
  assert.deepEqual(limits, ['cpu.max=200000 100000', `memory.max=${320 * 1024 * 1024}`, 'pids.max=64']);
  assert.deepEqual(jailerArgs(opts, layout, '/usr/local/bin/firecracker', limits), [
    '--id', 'e1-sb-x',
    '--exec-file', '/usr/local/bin/firecracker',
    '--uid', '123', '--gid', '100',
    '--chroot-base-dir', '/srv/jailer',
    '--cgroup-version', '2', '--parent-cgroup', 'emberd',
    '--cgroup', 'cpu.max=200000 100000', '--cgroup', `memory.max=${320 * 1024 * 1024}`, '--cgroup', 'pids.max=64',
    '--new-pid-ns',
    '--', '--api-sock', '/run/firecracker.socket',
  ]);
  assert.equal(cgroupDir(opts, layout, cg, limits), '/sys/fs/cgroup/emberd/e1-sb-x');
  // Firecracker's seccomp filters stay on; the jailer adds --id for Firecracker itself.
  const argv = jailerArgs(opts, layout, '/usr/local/bin/firecracker', limits);
  assert.ok(!argv.includes('--no-seccomp') && !argv.includes('--seccomp-filter') && !argv.includes('--daemonize'));
  assert.equal(argv.filter((a) => a === '--id').length, 1);
});

test('jailer argv with a network: --netns names the sandbox netns handle, before `--` (the jailer joins it before exec)', () => {
  const layout = jailLayout(opts, '/usr/local/bin/firecracker', 'e1-sb-x');
  const argv = jailerArgs(opts, layout, '/usr/local/bin/firecracker', [], '/run/netns/emberd-ab12-sb_x');
  assert.deepEqual(argv, [
    '--id', 'e1-sb-x',
    '--exec-file', '/usr/local/bin/firecracker',
    '--uid', '123', '--gid', '100',
    '--chroot-base-dir', '/srv/jailer',
    '--netns', '/run/netns/emberd-ab12-sb_x',
    '--new-pid-ns',
    '--', '--api-sock', '/run/firecracker.socket',
  ]);
  // Without a network there is no --netns: the jailer then leaves Firecracker in emberd's netns,
  // where it has no device to attach to (no network-interfaces request is sent either).
  assert.ok(!jailerArgs(opts, layout, '/usr/local/bin/firecracker', []).includes('--netns'));
});

test('no cgroup arguments when cgroup v2 or its controllers are missing', () => {
  const layout = jailLayout(opts, '/usr/local/bin/firecracker', 'e1-sb-x');
  assert.deepEqual(cgroupLimits({ vcpus: 1, memoryMib: 256 }, undefined), []);
  const hugetlbOnly = { mount: '/sys/fs/cgroup/unified', controllers: new Set(['hugetlb']) };
  assert.deepEqual(cgroupLimits({ vcpus: 1, memoryMib: 256 }, hugetlbOnly), []);
  const argv = jailerArgs({ ...opts, newPidNs: false }, layout, '/usr/local/bin/firecracker', []);
  assert.ok(!argv.includes('--cgroup-version') && !argv.includes('--cgroup') && !argv.includes('--new-pid-ns'));
  assert.equal(cgroupDir(opts, layout, hugetlbOnly, []), undefined);
  assert.deepEqual(cgroupLimits({ vcpus: 1, memoryMib: 256 }, { mount: '/x', controllers: new Set(['memory']) }), [`memory.max=${320 * 1024 * 1024}`]);
});

test('cgroup v2 detection from /proc/mounts (pure v2 and the hybrid layout of this host)', () => {
  const pure = 'sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n';
  const got = detectCgroupV2(pure, (m) => (m === '/sys/fs/cgroup' ? 'cpuset cpu io memory pids\n' : undefined));
  assert.equal(got?.mount, '/sys/fs/cgroup');
  assert.deepEqual([...got!.controllers].sort(), ['cpu', 'cpuset', 'io', 'memory', 'pids']);
  const hybrid = 'cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n';
  assert.deepEqual([...detectCgroupV2(hybrid, () => 'hugetlb')!.controllers], ['hugetlb']);
  assert.equal(detectCgroupV2('cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n', () => ''), undefined);
});

test('socket paths under a long chroot base are refused (sun_path is 107 bytes)', () => {
  checkJailPathLengths(jailLayout(opts, '/usr/local/bin/firecracker', jailIdFor('sb_0123456789abcdefghij', '/run/emberd')));
  const long = jailLayout({ ...opts, chrootBase: `/${'d'.repeat(60)}` }, '/usr/local/bin/firecracker', jailIdFor('sb_0123456789abcdefghij', '/run/emberd'));
  assert.throws(() => checkJailPathLengths(long), /107 bytes.*--jailer-base/);
});

test('prepareJail hard-links the boot files; removeJail removes the chroot and the cgroup dir', async () => {
  const base = mkdtempSync(join(tmpdir(), 'emb-jail-'));
  try {
    const img = join(base, 'img');
    mkdirSync(img);
    for (const f of ['vmlinux', 'initramfs.cpio', 'p.sqfs']) writeFileSync(join(img, f), f);
    const o = { ...opts, chrootBase: join(base, 'jails') };
    const layout = jailLayout(o, '/usr/local/bin/firecracker', 'e1-sb-x');
    mkdirSync(join(layout.jailDir, 'stale'), { recursive: true }); // an old jail of the same id
    assert.equal(prepareJail(layout, { kernel: join(img, 'vmlinux'), initramfs: join(img, 'initramfs.cpio'), pack: join(img, 'p.sqfs') }), 0);
    assert.equal(existsSync(join(layout.jailDir, 'stale')), false);
    assert.equal(statSync(layout.kernel.host).ino, statSync(join(img, 'vmlinux')).ino, 'a hard link, not a copy');
    assert.equal(readFileSync(layout.pack.host, 'utf8'), 'p.sqfs');
    const fakeCgroup = join(base, 'cg', 'emberd', 'e1-sb-x');
    mkdirSync(fakeCgroup, { recursive: true });
    await removeJail(layout, fakeCgroup);
    assert.equal(existsSync(layout.jailDir), false);
    assert.equal(existsSync(fakeCgroup), false);
    assert.equal(existsSync(join(img, 'vmlinux')), true, 'the images themselves stay');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('prepareJail copies when the images are on another filesystem (EXDEV)', (t) => {
  const a = mkdtempSync(join(tmpdir(), 'emb-jail-'));
  const b = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/emb-jail-') : undefined;
  try {
    if (!b || statSync(a).dev === statSync(b).dev) { t.skip('no second filesystem (/dev/shm) to test a cross-device link'); return; }
    for (const f of ['k', 'i', 'p']) writeFileSync(join(b, f), f);
    const layout = jailLayout({ ...opts, chrootBase: a }, '/usr/local/bin/firecracker', 'e1-sb-y');
    assert.equal(prepareJail(layout, { kernel: join(b, 'k'), initramfs: join(b, 'i'), pack: join(b, 'p') }), 3);
    assert.equal(readFileSync(layout.initramfs.host, 'utf8'), 'i');
  } finally {
    rmSync(a, { recursive: true, force: true });
    if (b) rmSync(b, { recursive: true, force: true });
  }
});

test('reapStaleJails kills a leftover jailed process of this daemon and removes its jail, leaves others alone', async () => {
  const base = mkdtempSync(join(tmpdir(), 'emb-jail-'));
  const tag = jailTag('/run/emberd-test');
  const mine = `${tag}-sb-aaaaaaaaaaaaaaaaaaaa`;
  const other = `${jailTag('/run/other')}-sb-bbbbbbbbbbbbbbbbbbbb`;
  // Stands in for a Firecracker left by a SIGKILLed daemon: its command line names the jail id.
  const fake = spawn('/bin/sh', ['-c', 'while :; do sleep 0.2; done', 'firecracker', '--id', mine], { stdio: 'ignore' });
  const spawned = once(fake, 'spawn');
  try {
    const o = { ...opts, chrootBase: base };
    for (const id of [mine, other]) {
      const l = jailLayout(o, '/usr/local/bin/firecracker', id);
      mkdirSync(l.root, { recursive: true });
      writeFileSync(l.pidFile, String(id === mine ? fake.pid : 1)); // pid 1 must never be killed: its cmdline does not match
    }
    await spawned; // emitted after the exec: its command line is the one above
    assert.ok(processHasArgs(fake.pid!, ['--id', mine]));
    const exited = new Promise((r) => fake.once('exit', (_c, s) => r(s)));
    assert.equal(await reapStaleJails(o, 'firecracker', tag, undefined), 1);
    assert.equal(await exited, 'SIGKILL');
    assert.equal(existsSync(join(base, 'firecracker', mine)), false);
    assert.equal(existsSync(join(base, 'firecracker', other)), true, "another daemon's jail is not touched");
  } finally {
    fake.kill('SIGKILL');
    rmSync(base, { recursive: true, force: true });
  }
});
