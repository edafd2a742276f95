// Every request the driver can send, for every configuration it can be in, validates against the
// Firecracker 1.15.1 and 1.16.1 specs (with Firecracker's own strictness). The requests recorded
// while real VMs boot against the test double are checked the same way in
// firecracker-backend.test.ts and test/e2e-firecracker.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FirecrackerApiSpec, SPEC_VERSIONS, type ApiRequest } from './api-spec.ts';
import { bootRequests, FC_KERNEL_ARGS, firecrackerBootArgs, firecrackerInstanceId, GET_VERSION, INSTANCE_START, SEND_CTRL_ALT_DEL, type FcGuestPaths } from './boot-config.ts';
import { jailLayout } from './jailer.ts';
import { isSupportedVersion, parseFirecrackerVersion, requireSupportedVersion } from './version.ts';
import { describeFirecrackerExit } from './exit-codes.ts';
import { isFirecrackerError } from './errors.ts';

const hostPaths: FcGuestPaths = { kernel: '/img/kernel/vmlinux', initramfs: '/img/initramfs.cpio', pack: '/img/packs/python.sqfs', vsockUds: '/run/emberd/sb_x/firecracker.vsock' };
const jail = jailLayout({ binary: '/usr/local/bin/jailer', uid: 123, gid: 100, chrootBase: '/srv/jailer' }, '/usr/local/bin/firecracker', 'e1234abcd-sb-aaaaaaaaaaaaaaaaaaaa');
const jailPaths: FcGuestPaths = { kernel: jail.kernel.inJail, initramfs: jail.initramfs.inJail, pack: jail.pack.inJail, vsockUds: jail.vsock.inJail, logFile: jail.log.inJail };

function allRequests(): { label: string; req: ApiRequest }[] {
  const out: { label: string; req: ApiRequest }[] = [];
  const machines = [{ vcpus: 1, memoryMib: 64 }, { vcpus: 2, memoryMib: 256 }, { vcpus: 3, memoryMib: 1024 }, { vcpus: 32, memoryMib: 65536 }];
  const pathSets: [string, FcGuestPaths][] = [
    ['host paths', hostPaths],
    ['host paths + logger/metrics', { ...hostPaths, logFile: '/run/emberd/sb_x/firecracker.log', metricsFile: '/run/emberd/sb_x/firecracker.metrics' }],
    ['jailed (chroot-relative)', jailPaths],
  ];
  for (const m of machines) {
    for (const [name, p] of pathSets) {
      for (const kernelArgs of [[], ['emberd.hostname=sb-x'], ['a="quoted value"', 'b=ü']]) {
        for (const req of bootRequests({ machine: m, kernelArgs }, p)) out.push({ label: `${name}, ${m.vcpus} vCPU/${m.memoryMib} MiB, ${kernelArgs.length} args`, req });
      }
    }
  }
  for (const req of [GET_VERSION, INSTANCE_START, SEND_CTRL_ALT_DEL]) out.push({ label: 'action', req });
  return out;
}

test('every request the driver builds validates against both supported specs', () => {
  const reqs = allRequests();
  assert.ok(reqs.length > 100);
  for (const v of SPEC_VERSIONS) {
    for (const strictness of ['spec', 'firecracker'] as const) {
      const spec = FirecrackerApiSpec.load(v, strictness);
      for (const { label, req } of reqs) {
        const r = spec.validateRequest(req);
        assert.ok(r.ok, `${v}/${strictness} ${label}: ${req.method} ${req.path} ${JSON.stringify(req.body)}: ${r.ok ? '' : r.errors.join('; ')}`);
      }
    }
  }
});

test('the boot sequence: machine, kernel, pack drive (read-only, not root), vsock CID 3', () => {
  const reqs = bootRequests({ machine: { vcpus: 2, memoryMib: 512 }, kernelArgs: ['emberd.hostname=sb-x'] }, hostPaths);
  assert.deepEqual(reqs.map((r) => `${r.method} ${r.path}`), ['PUT /machine-config', 'PUT /boot-source', 'PUT /drives/pack', 'PUT /vsock']);
  assert.deepEqual(reqs[0]!.body, { vcpu_count: 2, mem_size_mib: 512, smt: false, track_dirty_pages: false });
  assert.deepEqual(reqs[2]!.body, { drive_id: 'pack', path_on_host: hostPaths.pack, is_root_device: false, is_read_only: true });
  assert.deepEqual(reqs[3]!.body, { guest_cid: 3, uds_path: hostPaths.vsockUds });
  const boot = reqs[1]!.body as { boot_args: string; initrd_path: string; kernel_image_path: string };
  assert.equal(boot.kernel_image_path, hostPaths.kernel);
  assert.equal(boot.initrd_path, hostPaths.initramfs);
  assert.ok(boot.boot_args.endsWith(' emberd.hostname=sb-x'));
  const logged = bootRequests({ machine: { vcpus: 1, memoryMib: 256 }, kernelArgs: [] }, { ...hostPaths, logFile: '/l', metricsFile: '/m' });
  assert.deepEqual(logged.slice(0, 2).map((r) => r.path), ['/logger', '/metrics'], 'logger and metrics come first (pre-boot, once)');
});

test('jailed requests only name chroot-relative paths', () => {
  for (const r of bootRequests({ machine: { vcpus: 1, memoryMib: 256 }, kernelArgs: [] }, jailPaths)) {
    for (const v of Object.values(r.body as object)) if (typeof v === 'string' && v.startsWith('/')) assert.ok(!v.startsWith('/srv/'), `${r.path}: ${v} is a host path`);
  }
  assert.equal(jail.root, '/srv/jailer/firecracker/e1234abcd-sb-aaaaaaaaaaaaaaaaaaaa/root');
  assert.equal(jail.api.host, `${jail.root}/run/firecracker.socket`);
  assert.equal(jail.vsock.host, `${jail.root}/firecracker.vsock`);
  assert.equal(jail.pidFile, `${jail.root}/firecracker.pid`);
});

test('boot args: Firecracker style, console on, modules allowed, no i8042.nopnp', () => {
  const a = firecrackerBootArgs({ kernelArgs: ['x=1'] }).split(' ');
  for (const w of ['console=ttyS0', 'reboot=k', 'panic=1', 'pci=off', '8250.nr_uarts=1']) assert.ok(a.includes(w), w);
  for (const w of ['nomodule', 'i8042.nopnp', '8250.nr_uarts=0']) assert.ok(!a.includes(w), w);
  assert.equal(a.at(-1), 'x=1');
  assert.deepEqual(a.slice(0, FC_KERNEL_ARGS.length), FC_KERNEL_ARGS);
});

test('Firecracker instance ids: alphanumerics and dashes only', () => {
  assert.equal(firecrackerInstanceId('sb_abc123'), 'sb-abc123');
  assert.match(firecrackerInstanceId('x'.repeat(100)), /^x{64}$/);
});

test('supported versions: 1.15.x and 1.16.x only, with a clear error code otherwise', () => {
  for (const s of ['1.15.0', 'v1.15.1', 'Firecracker v1.16.1', '1.16.0-dev']) assert.ok(isSupportedVersion(parseFirecrackerVersion(s)!), s);
  for (const s of ['1.14.3', '1.17.0', '2.15.0', '0.25.2']) assert.equal(isSupportedVersion(parseFirecrackerVersion(s)!), false, s);
  assert.equal(parseFirecrackerVersion('banana'), undefined);
  assert.throws(() => requireSupportedVersion('Firecracker v1.14.0', 'x'), (e) => isFirecrackerError(e, 'FIRECRACKER_UNSUPPORTED_VERSION') && e.code === 'BOOT_FAILED' && /1\.15\.x to 1\.16\.x/.test(e.message));
  assert.throws(() => requireSupportedVersion('?', 'x'), (e) => isFirecrackerError(e, 'FIRECRACKER_UNSUPPORTED_VERSION'));
  assert.equal(requireSupportedVersion('1.15.1', 'x').minor, 15);
});

test('exit codes are explained', () => {
  assert.match(describeFirecrackerExit(148, null), /seccomp/);
  assert.match(describeFirecrackerExit(152, null), /configuration/);
  assert.match(describeFirecrackerExit(153, null), /arguments/);
  assert.match(describeFirecrackerExit(0, null), /normally/);
  assert.match(describeFirecrackerExit(null, 'SIGKILL'), /killed by SIGKILL/);
  assert.match(describeFirecrackerExit(99, null), /undocumented code \(exit code 99\)/);
});
