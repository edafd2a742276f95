// The Firecracker backend against the shared backend conformance suite, on real guests: the
// driver talks to test/firecracker-double, which validates each request against Firecracker's
// spec and boots the guest under QEMU. Every request the driver sent, as recorded on both sides
// (the client's diagnostics channel and the double's log), must validate against both specs.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FirecrackerBackend } from './firecracker-backend.ts';
import { DOUBLE_MARKER, probeFirecracker } from './probe.ts';
import { API_CHANNEL, type ApiEvent } from './api-client.ts';
import { FirecrackerApiSpec, SPEC_VERSIONS } from './api-spec.ts';
import { isFirecrackerError } from './errors.ts';
import { runBackendConformance } from '../conformance.ts';
import { testImages } from '../../../test/helpers/images.ts';
import { testBootSpec, TEST_BOOT_DEADLINE_MS } from '../../../test/helpers/boot-spec.ts';
import { isLive } from '../../../test/helpers/procs.ts';
import type { BootSpec } from '../backend.ts';
import { FIRECRACKER_DOUBLE as DOUBLE, FAKE_JAILER } from '../../../test/firecracker-double/path.ts';
import { AgentClient } from '../../agent/client.ts';
import { jailIdFor } from './jailer.ts';

const images = testImages();
const work = mkdtempSync(join(tmpdir(), 'emb-fc-'));
const recordFile = join(work, 'double-requests.jsonl');
const sent: ApiEvent[] = [];
const onApi = (e: unknown) => { sent.push(e as ApiEvent); };

before(() => {
  process.env.FC_DOUBLE_RECORD = recordFile; // inherited by every double the driver spawns
  API_CHANNEL.subscribe(onApi);
});
after(() => {
  API_CHANNEL.unsubscribe(onApi);
  delete process.env.FC_DOUBLE_RECORD;
  rmSync(work, { recursive: true, force: true });
});

runBackendConformance('firecracker', () => new FirecrackerBackend({ binary: DOUBLE }), {
  skip: { 'live-save': 'Firecracker resets vsock connections at every snapshot (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET; the double drops its bridge likewise): the guest ends what ran on them, so no channel carries over' },
});

const base = (n: string, over: Partial<BootSpec> = {}) => testBootSpec(`sb_${n}`, join(work, n), { pack: 'shell', ...over });

test('the backend identifies the double and says so in its info', () => {
  const p = probeFirecracker(DOUBLE);
  assert.equal(p.isDouble, true);
  assert.equal(p.version.text, '1.15.1');
  const b = new FirecrackerBackend({ binary: DOUBLE }, p);
  assert.equal(b.info.name, 'firecracker');
  assert.match(b.info.accel, /tcg/);
  assert.ok(b.info.warnings.some((w) => w.includes('test double')));
  // Firecracker's own line comes first (the version is read from it), the marker after it.
  const [first, ...rest] = execFileSync(DOUBLE, ['--version'], { encoding: 'utf8' }).split('\n');
  assert.equal(first, 'Firecracker v1.15.1');
  assert.ok(rest.some((l) => l.includes(DOUBLE_MARKER)));
  // What a real Firecracker prints has no marker: it is not taken for the double.
  const real = join(work, 'real-firecracker');
  writeFileSync(real, '#!/bin/sh\necho "Firecracker v1.15.1"\n', { mode: 0o755 });
  assert.equal(probeFirecracker(real).isDouble, false);
});

test('a binary that is not Firecracker, or an unsupported version, is refused before any VM', () => {
  assert.throws(() => probeFirecracker('/bin/true'), (e) => isFirecrackerError(e, 'FIRECRACKER_UNSUPPORTED_VERSION'));
  assert.throws(() => probeFirecracker(join(work, 'nope')), (e) => isFirecrackerError(e, 'FIRECRACKER_NOT_FOUND'));
  process.env.FC_DOUBLE_VERSION = '1.14.2';
  try {
    assert.throws(() => probeFirecracker(DOUBLE), (e) => isFirecrackerError(e, 'FIRECRACKER_UNSUPPORTED_VERSION') && /1\.14\.2.*1\.15\.x to 1\.16\.x/.test(e.message));
  } finally {
    delete process.env.FC_DOUBLE_VERSION;
  }
});

test('stale sockets are removed first; an API reporting an unsupported version is refused (GET /version) and cleaned up', async () => {
  const backend = new FirecrackerBackend({ binary: DOUBLE });
  const spec = base('stalever');
  mkdirSync(spec.runDir, { recursive: true });
  // Left by a crashed run: Firecracker would refuse to bind over either.
  for (const f of ['firecracker.sock', 'firecracker.vsock', 'firecracker.vsock_1024']) writeFileSync(join(spec.runDir, f), '');
  process.env.FC_DOUBLE_VERSION = '1.17.0';
  try {
    await assert.rejects(backend.boot(spec), (e) => isFirecrackerError(e, 'FIRECRACKER_UNSUPPORTED_VERSION') && /Firecracker 1\.17\.0/.test(e.message));
  } finally {
    delete process.env.FC_DOUBLE_VERSION;
  }
  assert.deepEqual(readdirSync(spec.runDir), [], 'every socket removed, stale ones included');
});

test('an API error is reported with its fault_message, before InstanceStart, leaving nothing', async () => {
  const spec = base('badinitrd', { initramfs: join(work, 'no-such-initramfs') });
  await assert.rejects(new FirecrackerBackend({ binary: DOUBLE }).boot(spec), (e) => isFirecrackerError(e, 'FIRECRACKER_API_ERROR') && /PUT \/boot-source.*initrd/.test(e.message));
  assert.deepEqual(readdirSync(spec.runDir), []);
});

test('a compressed kernel (bzImage) is refused at InstanceStart, as Firecracker 1.15 does', async () => {
  const spec = base('bzimage', { kernel: images.bzImage });
  await assert.rejects(new FirecrackerBackend({ binary: DOUBLE }).boot(spec), (e) => isFirecrackerError(e, 'FIRECRACKER_API_ERROR') && /InstanceStart|\/actions/.test(e.message) && /Elf magic/.test(e.message));
  assert.deepEqual(readdirSync(spec.runDir), []);
});

test('optional logger and metrics files are configured, and removed with the VM', async () => {
  // Fails at InstanceStart on purpose (no boot needed): logger/metrics are the first requests.
  const spec = base('logger', { kernel: images.bzImage });
  await assert.rejects(new FirecrackerBackend({ binary: DOUBLE, logFiles: true }).boot(spec));
  const mine = sent.filter((e) => e.socketPath.startsWith(spec.runDir)).map((e) => e.path);
  assert.deepEqual(mine.slice(0, 3), ['/version', '/logger', '/metrics']);
  assert.deepEqual(readdirSync(spec.runDir), []);
});

test('jailed path, with a stand-in jailer: chroot layout, hard links, chroot-relative API paths, pid file, cleanup', { timeout: 120_000 }, async () => {
  // test/firecracker-double/fake-jailer parses the jailer's argv, lays out the chroot, starts the
  // double as --new-pid-ns would (pid file, then exits) and makes the double resolve every path
  // under the jail root. No chroot, uid drop, cgroup or PID namespace happens (docs/firecracker.md).
  const jailerRecord = join(work, 'jailer-argv.jsonl');
  process.env.FAKE_JAILER_RECORD = jailerRecord;
  const chrootBase = join(work, 'jails');
  mkdirSync(chrootBase);
  const backend = new FirecrackerBackend({ binary: DOUBLE, jailer: { binary: FAKE_JAILER, uid: 65534, gid: 65534, chrootBase }, logFiles: true });
  const spec = base('jailed');
  const id = jailIdFor(spec.id, work);
  const root = join(chrootBase, 'firecracker-double', id, 'root');
  let agent: AgentClient | undefined;
  try {
    const vm = await backend.boot(spec);
    agent = new AgentClient(vm.control);
    await agent.helloUntil(Date.now() + TEST_BOOT_DEADLINE_MS);
    assert.equal((await agent.run({ argv: ['sh', '-c', 'echo $((6*7))'], timeoutMs: 20_000 })).stdout.toString(), '42\n');
    assert.equal(Number(readFileSync(join(root, 'firecracker-double.pid'), 'utf8')), vm.pid, 'the VM pid is the one the jailer wrote');
    assert.deepEqual(vm.resources().paths, [join(chrootBase, 'firecracker-double', id)]);
    assert.deepEqual(readdirSync(root).sort(), ['dev', 'firecracker-double', 'firecracker-double.pid', 'firecracker.log', 'firecracker.vsock', 'initramfs.cpio', 'pack.sqfs', 'run', 'vmlinux']);
    assert.deepEqual(readdirSync(join(root, 'run')), ['firecracker.socket']);
    assert.equal(statSync(join(root, 'vmlinux')).ino, statSync(images.kernel).ino, 'kernel hard-linked, not copied');
    const argv = JSON.parse(readFileSync(jailerRecord, 'utf8').trim()) as string[];
    assert.deepEqual(argv.slice(0, 10), ['--id', id, '--exec-file', DOUBLE, '--uid', '65534', '--gid', '65534', '--chroot-base-dir', chrootBase]);
    assert.deepEqual(argv.slice(argv.indexOf('--new-pid-ns')), ['--new-pid-ns', '--', '--api-sock', '/run/firecracker.socket']);
    const mine = sent.filter((e) => e.socketPath === join(root, 'run', 'firecracker.socket'));
    assert.deepEqual(mine.map((e) => e.path), ['/version', '/logger', '/machine-config', '/boot-source', '/drives/pack', '/vsock', '/actions']);
    for (const e of mine) {
      for (const val of Object.values((e.body ?? {}) as Record<string, unknown>)) {
        if (typeof val === 'string' && val.startsWith('/')) assert.ok(!val.startsWith(work) && !val.startsWith('/root'), `${e.path}: host path ${val} sent to a jailed Firecracker`);
      }
    }
    agent.shutdown();
    const exit = await vm.stop(10_000);
    assert.match(exit.reason, /own PID namespace/);
    // Reparented when the jailer exited, so reaped by init, maybe a moment later: gone or a zombie.
    assert.ok(!isLive(vm.pid), 'Firecracker (double) still running');
    assert.equal(existsSync(join(chrootBase, 'firecracker-double', id)), false, 'the jail is removed');
    assert.equal(existsSync(images.kernel), true);
  } finally {
    agent?.close();
    delete process.env.FAKE_JAILER_RECORD;
  }
});

test('every request the driver sent in this file validates against both specs (client and double records)', () => {
  assert.ok(sent.length >= 20, `only ${sent.length} requests recorded`);
  const fromDouble = readFileSync(recordFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { method: string; path: string; body?: unknown; status: number; fault_message?: string });
  assert.equal(fromDouble.length, sent.filter((e) => e.status !== undefined).length, 'the double saw exactly what the client sent');
  const kinds = new Set(sent.map((e) => `${e.method} ${e.path} ${(e.body as { action_type?: string } | undefined)?.action_type ?? ''}`.trim()));
  for (const k of ['GET /version', 'PUT /machine-config', 'PUT /boot-source', 'PUT /drives/pack', 'PUT /vsock', 'PUT /actions InstanceStart', 'PUT /actions SendCtrlAltDel', 'PUT /logger', 'PUT /metrics']) {
    assert.ok(kinds.has(k), `${k} was exercised`);
  }
  for (const v of SPEC_VERSIONS) {
    const spec = FirecrackerApiSpec.load(v, 'firecracker');
    for (const r of [...sent, ...fromDouble]) {
      const res = spec.validateRequest(r);
      assert.ok(res.ok, `${v}: ${r.method} ${r.path} ${JSON.stringify(r.body)}: ${res.ok ? '' : res.errors.join('; ')}`);
    }
  }
  // No request was refused for its shape: the only 400s are the deliberate ones above.
  for (const r of fromDouble.filter((x) => x.status >= 400)) assert.match(r.fault_message ?? '', /initrd file cannot be opened|Elf magic|kernel file cannot be opened/);
  assert.equal(existsSync(work), true);
});
