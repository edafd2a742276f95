// How a backend is chosen: --backend auto|qemu|firecracker, the jailer decision, and the daemon
// flags that feed them. No VM is booted here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseAuto, resolveJailer, selectBackend } from './select.ts';
import { FirecrackerError, isFirecrackerError } from './firecracker/errors.ts';
import type { FirecrackerProbe } from './firecracker/probe.ts';
import { parseConfig, USAGE } from '../daemon/config.ts';
import { FIRECRACKER_DOUBLE } from '../../test/firecracker-double/path.ts';

const kvmOk = { usable: true, reason: '/dev/kvm is read-writable and the CPU has hardware virtualisation' };
const kvmNo = { usable: false, reason: '/dev/kvm opens but the CPU advertises neither vmx nor svm' };
const real: FirecrackerProbe = { binary: '/usr/local/bin/firecracker', version: { major: 1, minor: 15, patch: 1, text: '1.15.1' }, isDouble: false };

test('auto: Firecracker only with usable KVM and a supported binary; QEMU otherwise, saying why', () => {
  const a = chooseAuto(kvmOk, () => real);
  assert.equal(a.backend, 'firecracker');
  assert.match(a.reason, /read-writable.*Firecracker 1\.15\.1/);
  const b = chooseAuto(kvmNo, () => { throw new Error('must not be probed'); });
  assert.equal(b.backend, 'qemu');
  assert.match(b.reason, /vmx nor svm.*software emulation/);
  const c = chooseAuto(kvmOk, () => { throw new FirecrackerError('FIRECRACKER_UNSUPPORTED_VERSION', '/usr/bin/firecracker is Firecracker 1.7.0, but emberd supports 1.15.x to 1.16.x only'); });
  assert.equal(c.backend, 'qemu');
  assert.match(c.reason, /KVM is usable but Firecracker is not \(\/usr\/bin\/firecracker is Firecracker 1\.7\.0.*\), so QEMU with KVM/);
});

test('jailer: auto means on as root with a jailer binary next to firecracker; off for the double or non-root', () => {
  const dir = mkdtempSync(join(tmpdir(), 'emb-sel-'));
  try {
    const fc = join(dir, 'firecracker');
    const jailer = join(dir, 'jailer');
    for (const f of [fc, jailer]) { writeFileSync(f, '#!/bin/sh\n'); chmodSync(f, 0o755); }
    const probe = { ...real, binary: fc };
    const on = resolveJailer({ backend: 'auto', jailerBase: '/srv/j', jailerUid: 123, jailerGid: 100 }, probe, true);
    assert.deepEqual(on.jailer, { binary: jailer, chrootBase: '/srv/j', uid: 123, gid: 100, newPidNs: true });
    assert.equal(resolveJailer({ backend: 'auto' }, probe, false).jailer, undefined);
    assert.match(resolveJailer({ backend: 'auto' }, probe, false).note, /not running as root/);
    assert.equal(resolveJailer({ backend: 'auto', jailer: 'off' }, probe, true).jailer, undefined);
    assert.match(resolveJailer({ backend: 'auto' }, { ...probe, isDouble: true }, true).note, /test double/);
    assert.equal(resolveJailer({ backend: 'auto', jailer }, probe, true).jailer?.binary, jailer);
    assert.throws(() => resolveJailer({ backend: 'auto', jailer }, probe, false), (e) => isFirecrackerError(e, 'FIRECRACKER_JAILER') && /needs root/.test(e.message));
    assert.throws(() => resolveJailer({ backend: 'auto', jailer: join(dir, 'nope') }, probe, true), (e) => isFirecrackerError(e, 'FIRECRACKER_NOT_FOUND'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--backend firecracker with the test double works without KVM; a real binary without KVM is refused', () => {
  const b = selectBackend({ backend: 'firecracker', firecracker: FIRECRACKER_DOUBLE }, kvmNo);
  assert.equal(b.name, 'firecracker');
  assert.equal(b.info.version, '1.15.1');
  assert.ok(b.info.warnings.some((w) => /without its jailer/.test(w)));
  const dir = mkdtempSync(join(tmpdir(), 'emb-sel-'));
  try {
    const fake = join(dir, 'firecracker');
    writeFileSync(fake, '#!/bin/sh\necho "Firecracker v1.16.1"; echo\n');
    chmodSync(fake, 0o755);
    assert.throws(() => selectBackend({ backend: 'firecracker', firecracker: fake }, kvmNo), (e) => e instanceof FirecrackerError && /needs KVM/.test(e.message));
    assert.throws(() => selectBackend({ backend: 'firecracker', firecracker: join(dir, 'missing') }, kvmOk), (e) => isFirecrackerError(e, 'FIRECRACKER_NOT_FOUND'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('auto on this host (no usable KVM) is QEMU, and the reason says why not Firecracker', () => {
  const b = selectBackend({ backend: 'auto', firecracker: FIRECRACKER_DOUBLE }, kvmNo);
  assert.equal(b.name, 'qemu');
  assert.match(b.info.reason, /^auto: .*Firecracker needs KVM/);
  assert.ok(b.snapshots, 'the QEMU backend keeps its snapshot support when auto picks it');
  const withKvm = selectBackend({ backend: 'auto', firecracker: FIRECRACKER_DOUBLE }, kvmOk);
  assert.equal(withKvm.name, 'firecracker', 'with KVM (here: claimed) and a supported binary, auto picks Firecracker');
  assert.match(withKvm.info.reason, /^auto: .*Firecracker 1\.15\.1/);
});

test('daemon flags: --firecracker, --jailer, --jailer-base, --jailer-uid/gid (and their variables), in --help', () => {
  const c = parseConfig(['--backend', 'firecracker', '--firecracker', '/opt/fc', '--jailer', 'off', '--jailer-base', '/var/jail', '--jailer-uid', '1000', '--jailer-gid', '1001'], {});
  assert.ok(c !== 'help');
  assert.deepEqual([c.vmm.backend, c.vmm.firecracker, c.vmm.jailer, c.vmm.jailerBase, c.vmm.jailerUid, c.vmm.jailerGid], ['firecracker', '/opt/fc', 'off', '/var/jail', 1000, 1001]);
  const d = parseConfig([], { EMBERD_FIRECRACKER: '/x/fc', EMBERD_JAILER: '/x/jailer', EMBERD_JAILER_BASE: '/j' });
  assert.ok(d !== 'help');
  assert.deepEqual([d.vmm.firecracker, d.vmm.jailer, d.vmm.jailerBase, d.vmm.jailerUid], ['/x/fc', '/x/jailer', '/j', 65534]);
  const e = parseConfig([], {});
  assert.ok(e !== 'help');
  assert.deepEqual([e.vmm.firecracker, e.vmm.jailer, e.vmm.jailerBase], [undefined, 'auto', '/srv/jailer']);
  assert.throws(() => parseConfig(['--jailer-base', 'relative'], {}), /absolute/);
  assert.throws(() => parseConfig(['--jailer-uid', '-1'], {}), /jailer-uid/);
  for (const f of ['--firecracker PATH', '--jailer auto|off|PATH', '--jailer-base DIR', '--jailer-uid N', '--jailer-gid N']) assert.ok(USAGE.includes(f), f);
});
