// Every request the driver can send, for every configuration it can be in, validates against the
// Firecracker 1.15.1 and 1.16.1 specs (with Firecracker's own strictness). The requests recorded
// while real VMs boot against the test double are checked the same way in
// firecracker-backend.test.ts and test/e2e-firecracker.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FirecrackerApiSpec, SPEC_VERSIONS, type ApiRequest } from './api-spec.ts';
import {
  bootRequests, FC_KERNEL_ARGS, firecrackerBootArgs, firecrackerInstanceId, GET_VERSION, INSTANCE_START, PAUSE_VM, RESUME_VM, restoreRequests, saveRequests, SEND_CTRL_ALT_DEL,
  type FcGuestPaths,
} from './boot-config.ts';
import { jailLayout } from './jailer.ts';
import { isSupportedVersion, parseFirecrackerVersion, requireSupportedVersion, SNAPSHOT_FORMAT_BY_MINOR, supportsVsockOverride } from './version.ts';
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
  for (const req of bootRequests({ machine: machines[0]!, kernelArgs: ['emberd.net=10.255.255.2/30,10.255.255.1'], network: { netns: 'emberd-ab12-sb_x', tap: 'tap0', mac: '02:eb:00:00:00:02' } }, hostPaths)) out.push({ label: 'with a network', req });
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

// ---- snapshots ----

const snapHost = { snapshotPath: '/img/snapshots/0123abcd/vmstate', memFilePath: '/img/snapshots/0123abcd/memory' };
const snapJail = { snapshotPath: '/vmstate', memFilePath: '/memory' };

/** Every snapshot request the driver can send, with the spec versions it must validate against. */
function snapshotRequests(): { label: string; req: ApiRequest; versions: readonly string[] }[] {
  const out: { label: string; req: ApiRequest; versions: readonly string[] }[] = [];
  for (const [name, p] of [['host paths', snapHost], ['jailed', snapJail]] as const) {
    for (const req of saveRequests(p)) out.push({ label: `save, ${name}`, req, versions: SPEC_VERSIONS });
    out.push({ label: `resume after a fork's save, ${name}`, req: RESUME_VM, versions: SPEC_VERSIONS });
    for (const logging of [{}, { logFile: '/run/emberd/sb_x/firecracker.log', metricsFile: '/run/emberd/sb_x/firecracker.metrics' }]) {
      for (const req of restoreRequests({ ...p, ...logging })) out.push({ label: `load on 1.15, ${name}`, req, versions: SPEC_VERSIONS });
      const override = name === 'jailed' ? jail.vsock.inJail : hostPaths.vsockUds;
      for (const req of restoreRequests({ ...p, ...logging, vsockUdsOverride: override })) out.push({ label: `load on 1.16, ${name}`, req, versions: req.path === '/snapshot/load' ? ['1.16.1'] : SPEC_VERSIONS });
    }
  }
  return out;
}

test('every snapshot request validates against the spec of each version it is sent to', () => {
  const reqs = snapshotRequests();
  assert.ok(reqs.length >= 18);
  for (const { label, req, versions } of reqs) {
    for (const v of versions) {
      for (const strictness of ['spec', 'firecracker'] as const) {
        const r = FirecrackerApiSpec.load(v as '1.15.1', strictness).validateRequest(req);
        assert.ok(r.ok, `${v}/${strictness} ${label}: ${req.method} ${req.path} ${JSON.stringify(req.body)}: ${r.ok ? '' : r.errors.join('; ')}`);
      }
    }
  }
});

test('save: PATCH /vm Paused, then a Full snapshot to the given paths', () => {
  const reqs = saveRequests(snapHost);
  assert.deepEqual(reqs, [
    { method: 'PATCH', path: '/vm', body: { state: 'Paused' } },
    { method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'Full', snapshot_path: snapHost.snapshotPath, mem_file_path: snapHost.memFilePath } },
  ]);
  assert.equal(reqs[0], PAUSE_VM);
});

test('load: mem_backend File (not the deprecated mem_file_path), resumed, logger/metrics first, vsock_override only when asked', () => {
  const plain = restoreRequests(snapHost);
  assert.deepEqual(plain, [{ method: 'PUT', path: '/snapshot/load', body: {
    snapshot_path: snapHost.snapshotPath, mem_backend: { backend_type: 'File', backend_path: snapHost.memFilePath }, track_dirty_pages: false, resume_vm: true,
  } }]);
  const logged = restoreRequests({ ...snapJail, logFile: '/firecracker.log', vsockUdsOverride: '/firecracker.vsock' });
  assert.deepEqual(logged.map((r) => r.path), ['/logger', '/snapshot/load']);
  assert.deepEqual((logged[1]!.body as { vsock_override: unknown }).vsock_override, { uds_path: '/firecracker.vsock' });
  for (const r of logged) for (const v of Object.values(r.body as object)) if (typeof v === 'string' && v.startsWith('/')) assert.ok(!v.startsWith('/srv/') && !v.startsWith('/img/'), `${r.path}: ${v} is a host path`);
});

test('deliberately wrong snapshot requests are caught by the spec', () => {
  const s15 = FirecrackerApiSpec.load('1.15.1', 'firecracker');
  const s16 = FirecrackerApiSpec.load('1.16.1', 'firecracker');
  const withOverride = restoreRequests({ ...snapHost, vsockUdsOverride: '/run/x.vsock' })[0]!;
  const bad = (spec: FirecrackerApiSpec, req: ApiRequest, re: RegExp) => {
    const r = spec.validateRequest(req);
    assert.equal(r.ok, false, `${spec.version}: ${req.method} ${req.path} ${JSON.stringify(req.body)} should be refused`);
    assert.match(r.ok ? '' : r.errors.join('; '), re);
  };
  // vsock_override does not exist before 1.16: a 1.15 Firecracker would refuse the whole load.
  bad(s15, withOverride, /unknown field "vsock_override"/);
  assert.ok(s16.validateRequest(withOverride).ok);
  bad(s16, { method: 'PATCH', path: '/vm', body: { state: 'Pause' } }, /must be one of \["Paused","Resumed"\]/);
  bad(s16, { method: 'PUT', path: '/vm', body: { state: 'Paused' } }, /PUT is not defined for \/vm \(only PATCH\)/);
  bad(s15, { method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'full', snapshot_path: 'a', mem_file_path: 'b' } }, /snapshot_type: must be one of \["Full","Diff"\]/);
  bad(s15, { method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'Full', snapshot_path: 'a' } }, /missing required field "mem_file_path"/);
  bad(s15, { method: 'PUT', path: '/snapshot/load', body: { mem_backend: { backend_type: 'File', backend_path: 'm' }, resume_vm: true } }, /missing required field "snapshot_path"/);
  bad(s15, { method: 'PUT', path: '/snapshot/load', body: { snapshot_path: 's', mem_backend: { backend_type: 'File' } } }, /\/mem_backend: missing required field "backend_path"/);
  bad(s16, { method: 'PUT', path: '/snapshot/load', body: { snapshot_path: 's', mem_backend: { backend_type: 'Memfd', backend_path: 'm' } } }, /backend_type: must be one of/);
  bad(s16, { method: 'PUT', path: '/snapshot/load', body: { snapshot_path: 's', mem_file_path: 'm', vsock_override: { path: '/x' } } }, /vsock_override: (missing required field "uds_path"|unknown field "path")/);
  bad(s15, { method: 'PUT', path: '/snapshot/load', body: { snapshot_path: 's', mem_file_path: 'm', resume_vm: 'yes' } }, /resume_vm: must be boolean/);
  // What the swagger cannot say (mem_backend and mem_file_path are mutually exclusive, one is
  // required) passes here; the test double refuses it as Firecracker does (double.test.ts).
  assert.ok(s15.validateRequest({ method: 'PUT', path: '/snapshot/load', body: { snapshot_path: 's' } }).ok);
});

test('snapshot formats and vsock_override support by version', () => {
  assert.deepEqual(SNAPSHOT_FORMAT_BY_MINOR, { '1.15': '9.0.0', '1.16': '10.0.0' });
  assert.equal(supportsVsockOverride(parseFirecrackerVersion('1.15.1')!), false);
  assert.equal(supportsVsockOverride(parseFirecrackerVersion('1.16.0')!), true);
  // The spec files agree: the 1.16.1 swagger has VsockOverride, the 1.15.1 one has not.
  assert.ok(FirecrackerApiSpec.load('1.16.1').validateRequest({ method: 'PUT', path: '/snapshot/load', body: { snapshot_path: 's', mem_file_path: 'm', vsock_override: { uds_path: 'v' } } }).ok);
  assert.equal(FirecrackerApiSpec.load('1.15.1').validateRequest({ method: 'PUT', path: '/snapshot/load', body: { snapshot_path: 's', mem_file_path: 'm', vsock_override: { uds_path: 'v' } } }).ok, false);
});

test('a spec with a network gets PUT /network-interfaces/eth0 on its tap, and a spec without none', () => {
  const net = bootRequests({ machine: { vcpus: 1, memoryMib: 256 }, kernelArgs: [], network: { netns: 'n', tap: 'tap0', mac: '02:eb:00:00:00:02' } }, hostPaths);
  assert.deepEqual(net.at(-1), { method: 'PUT', path: '/network-interfaces/eth0', body: { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '02:eb:00:00:00:02' } });
  assert.ok(!bootRequests({ machine: { vcpus: 1, memoryMib: 256 }, kernelArgs: [] }, hostPaths).some((r) => r.path.startsWith('/network-interfaces')));
});
