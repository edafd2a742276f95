// Golden snapshots under `--backend firecracker`, against the Firecracker API test double (every
// request validated against Firecracker's spec; guests under QEMU, snapshots as QEMU migration
// streams: docs/firecracker.md). Three set-ups, the three ways a clone gets a vsock socket of its
// own: Firecracker 1.15 without the jailer (the relative uds_path resolves in each clone's run
// dir), 1.16 (vsock_override) and the jailer (each clone's chroot, stand-in jailer).
// VM boots, under TCG: 5 cold (daemon: golden, fallback, rebuild; 1.16 golden; jailed golden)
// plus 6 restores.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { testImages } from './helpers/images.ts';
import { testBootSpec, TEST_BOOT_DEADLINE_MS } from './helpers/boot-spec.ts';
import { liveProcessesWith } from './helpers/procs.ts';
import { FIRECRACKER_DOUBLE, FAKE_JAILER } from './firecracker-double/path.ts';
import { FirecrackerBackend } from '../src/vmm/firecracker/firecracker-backend.ts';
import { FirecrackerApiClient, API_CHANNEL, type ApiEvent } from '../src/vmm/firecracker/api-client.ts';
import { FirecrackerApiSpec } from '../src/vmm/firecracker/api-spec.ts';
import { isFirecrackerError } from '../src/vmm/firecracker/errors.ts';
import { jailIdFor } from '../src/vmm/firecracker/jailer.ts';
import { AgentClient } from '../src/agent/client.ts';
import type { BootSpec, VmHandle } from '../src/vmm/backend.ts';

const work = mkdtempSync(join(tmpdir(), 'emb-fcsnap-'));
after(() => rmSync(work, { recursive: true, force: true }));
const images = testImages();
const spec15 = FirecrackerApiSpec.load('1.15.1', 'firecracker');
const spec16 = FirecrackerApiSpec.load('1.16.1', 'firecracker');

/** A private images dir offering only the shell pack: one golden build instead of two. */
function shellOnlyImages(): string {
  const dir = join(work, 'images');
  mkdirSync(join(dir, 'packs'), { recursive: true });
  const manifest = JSON.parse(readFileSync(join(images.dir, 'manifest.json'), 'utf8'));
  for (const rel of Object.keys(manifest.files)) if (rel.startsWith('packs/') && !rel.startsWith('packs/shell.')) delete manifest.files[rel];
  for (const name of Object.keys(manifest.inputs?.packs ?? {})) if (name !== 'shell') delete manifest.inputs.packs[name];
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  for (const rel of ['kernel', 'initramfs.cpio', 'packs/shell.sqfs', 'packs/shell.json']) symlinkSync(join(images.dir, rel), join(dir, rel));
  return dir;
}

interface Recorded { pid: number; method: string; path: string; body?: any; status: number; fault_message?: string }
const readRecord = (file: string): Recorded[] => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));

describe('daemon, Firecracker 1.15 without jailer: golden snapshot, restore-on-create, fallback', () => {
  let d: TestDaemon;
  const imagesDir = shellOnlyImages();
  const record = join(work, 'daemon-requests.jsonl');
  const snapshotDirOf = async () => join(imagesDir, 'snapshots', (await http(d, 'GET', '/')).json.snapshots.shell.key);
  const sh = (id: string, code: string) => http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ code }), { 'content-type': 'application/json' });
  const ready = async () => (await http(d, 'GET', '/')).json.snapshots.shell.status === 'ready';

  before(async () => {
    process.env.FC_DOUBLE_RECORD = record; // inherited by the daemon and every double it spawns
    try {
      d = await startDaemon(['--backend', 'firecracker', '--firecracker', FIRECRACKER_DOUBLE, '--images-dir', imagesDir, '--pool-size', '0', '--default-pack', 'shell']);
    } finally {
      delete process.env.FC_DOUBLE_RECORD;
    }
    await eventually(ready, 120_000, 'golden snapshot built');
  });
  after(async () => {
    const code = await d.stop();
    assert.equal(code, 0, d.log());
    assert.deepEqual(liveProcessesWith(d.runDir), [], 'a double or QEMU outlived the daemon');
  });

  test('GET / reports the snapshot; its files and record; the save was PATCH /vm Paused + PUT /snapshot/create Full', async () => {
    const info = (await http(d, 'GET', '/')).json;
    assert.equal(info.backend.name, 'firecracker');
    assert.equal(info.snapshots.shell.status, 'ready');
    assert.ok(info.snapshots.shell.bytes > 1_000_000, `${info.snapshots.shell.bytes} bytes`);
    assert.equal(info.pool, null);
    const dir = await snapshotDirOf();
    assert.deepEqual(readdirSync(dir).sort(), ['firecracker-snapshot.json', 'memory', 'meta.json', 'vmstate']);
    const meta = JSON.parse(readFileSync(join(dir, 'firecracker-snapshot.json'), 'utf8'));
    assert.deepEqual([meta.firecracker_version, meta.snapshot_format, meta.jailed, meta.vsock_uds_path], ['1.15.1', '9.0.0', false, 'firecracker.vsock']);
    const reqs = readRecord(record);
    const create = reqs.find((r) => r.path === '/snapshot/create')!;
    const golden = reqs.filter((r) => r.pid === create.pid).map((r) => `${r.method} ${r.path} ${r.status}`);
    assert.deepEqual(golden.slice(-2), ['PATCH /vm 204', 'PUT /snapshot/create 204']);
    assert.deepEqual(golden.slice(0, 6), ['GET /version 200', 'PUT /machine-config 204', 'PUT /boot-source 204', 'PUT /drives/pack 204', 'PUT /vsock 204', 'PUT /actions 204']);
    assert.equal(reqs.find((r) => r.pid === create.pid && r.path === '/vsock')!.body.uds_path, 'firecracker.vsock', 'a relative uds_path: it resolves in each clone\'s run dir');
    assert.deepEqual(create.body, { snapshot_type: 'Full', snapshot_path: join(`${dir}.tmp-${d.proc.pid}`, 'vmstate'), mem_file_path: join(`${dir}.tmp-${d.proc.pid}`, 'memory') });
  });

  test('restored clones are unique and clean: entropy, clock, hostname, overlay, a vsock socket of their own', { timeout: 120_000 }, async () => {
    const a = await d.client.createSandbox({ language_pack: 'shell' });
    const b = await d.client.createSandbox({ language_pack: 'shell' });
    assert.deepEqual([a.boot_mode, b.boot_mode], ['restore', 'restore']);
    const rand = async (id: string) => (await sh(id, 'head -c 16 /dev/urandom | od -An -tx1')).json.stdout;
    const [ra, rb] = await Promise.all([rand(a.id), rand(b.id)]);
    assert.match(ra, /[0-9a-f]{2}/);
    assert.notEqual(ra, rb, 'two clones of one snapshot read the same random bytes');
    for (const sb of [a, b]) {
      const t0 = Date.now() / 1000;
      const g = Number((await sh(sb.id, 'date +%s')).json.stdout);
      const t1 = Date.now() / 1000;
      assert.ok(g >= Math.floor(t0) - 1 && g <= t1 + 1, `guest clock ${g} is not within a second of the host's [${t0}, ${t1}]`);
      assert.equal((await sh(sb.id, 'cat /proc/sys/kernel/hostname')).json.stdout, `${sb.id.replace('_', '-')}\n`);
      assert.deepEqual(readdirSync(join(d.runDir, sb.id)).sort(), ['firecracker.sock', 'firecracker.vsock']);
    }
    await sh(a.id, 'echo secret > /root/a; echo x > /tmp/a');
    const c = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal(c.boot_mode, 'restore');
    assert.equal((await sh(c.id, 'ls -A /root /tmp')).json.stdout, '/root:\n\n/tmp:\n');
    for (const sb of [a, b, c]) await d.client.deleteSandbox(sb.id);

    // Each clone: a fresh process, GET /version, then only PUT /snapshot/load (no boot-time
    // configuration; 1.15 has no vsock_override); every request valid for Firecracker 1.15.1.
    const dir = await snapshotDirOf();
    const reqs = readRecord(record);
    const loads = reqs.filter((r) => r.path === '/snapshot/load');
    assert.equal(loads.length, 3);
    for (const l of loads) {
      const mine = reqs.filter((r) => r.pid === l.pid);
      assert.deepEqual(mine.slice(0, 2).map((r) => `${r.method} ${r.path} ${r.status}`), ['GET /version 200', 'PUT /snapshot/load 204']);
      for (const r of mine.slice(2)) assert.equal(r.body?.action_type, 'SendCtrlAltDel');
      assert.deepEqual(l.body, { snapshot_path: join(dir, 'vmstate'), mem_backend: { backend_type: 'File', backend_path: join(dir, 'memory') }, track_dirty_pages: false, resume_vm: true });
    }
    for (const r of reqs) {
      const v = spec15.validateRequest(r);
      assert.ok(v.ok, `${r.method} ${r.path} ${JSON.stringify(r.body)}: ${v.ok ? '' : v.errors.join('; ')}`);
    }
  });

  test('a corrupt snapshot falls back to a cold boot and is rebuilt', { timeout: 240_000 }, async () => {
    const dir = await snapshotDirOf();
    writeFileSync(join(dir, 'vmstate'), 'not a snapshot');
    const sb = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal(sb.boot_mode, 'cold', 'the create is served by a cold boot');
    assert.equal((await sh(sb.id, 'echo ok')).json.stdout, 'ok\n');
    assert.match(d.log(), /snapshot of pack shell failed to restore \(.*Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file/);
    // Firecracker ends itself after a failed load; nothing of that clone is left.
    assert.deepEqual(readRecord(record).filter((r) => r.path === '/snapshot/load').map((r) => r.status), [204, 204, 204, 400]);
    await eventually(ready, 180_000, 'snapshot rebuilt');
    const again = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal(again.boot_mode, 'restore');
    assert.equal((await sh(again.id, 'echo ok')).json.stdout, 'ok\n');
    for (const s of [sb, again]) await d.client.deleteSandbox(s.id);
    // DELETE answers before the VM is torn down (in the background): its run dir goes soon after.
    await eventually(async () => readdirSync(d.runDir).filter((n) => n !== 'emberd.pid').length === 0, 30_000, `run dirs removed: ${readdirSync(d.runDir).join(', ')}`);
  });
});

// ---- the backend directly ----

let n = 0;
const specOf = (name: string): BootSpec => {
  const i = n++;
  return testBootSpec(`sb_${name}${i}`, join(work, `${name}${i}`), { pack: 'shell' });
};

async function agentOf(vm: VmHandle): Promise<AgentClient> {
  const agent = new AgentClient(vm.control);
  await agent.helloUntil(Date.now() + TEST_BOOT_DEADLINE_MS);
  return agent;
}

const run = async (agent: AgentClient, cmd: string) => (await agent.run({ argv: ['sh', '-c', cmd], timeoutMs: 20_000 })).stdout.toString();

const events: ApiEvent[] = [];
const onApi = (e: unknown) => { events.push(e as ApiEvent); };
before(() => API_CHANNEL.subscribe(onApi));
after(() => API_CHANNEL.unsubscribe(onApi));

describe('Firecracker 1.16: vsock_override names each clone\'s socket', () => {
  before(() => { process.env.FC_DOUBLE_VERSION = '1.16.1'; });
  after(() => { delete process.env.FC_DOUBLE_VERSION; });

  test('save (create refused while running), restore with vsock_override, the clone carries the golden VM\'s state', { timeout: 180_000 }, async () => {
    const backend = new FirecrackerBackend({ binary: FIRECRACKER_DOUBLE });
    assert.match(backend.snapshots.fingerprint, /^firecracker 1\.16\.1 \| snapshot-format 10\.0\.0 \| tcg \(test double\) \| no-jailer \| cpu .+ \| host-kernel .+ \| emberd-firecracker-snapshot\/1$/);
    const goldenSpec = specOf('g16');
    const golden = await backend.boot(goldenSpec);
    const dir = join(work, 'snap16');
    let clone: VmHandle | undefined;
    try {
      const ga = await agentOf(golden);
      await run(ga, 'echo golden > /tmp/marker');
      // Firecracker's rule, enforced by the double: a snapshot only of a paused VM.
      const raw = new FirecrackerApiClient(join(goldenSpec.runDir, 'firecracker.sock'));
      await assert.rejects(raw.put('/snapshot/create', { snapshot_type: 'Full', snapshot_path: join(work, 'x'), mem_file_path: join(work, 'y') }),
        (e) => isFirecrackerError(e, 'FIRECRACKER_API_ERROR') && /save\/restore unavailable while running/.test(e.message));
      raw.close();
      const { bytes } = await backend.snapshots.save(golden, dir);
      assert.ok(bytes > 1_000_000);
      assert.equal((await golden.exited).signal, 'SIGKILL', 'the golden VM, paused and saved, is killed');
      assert.deepEqual(readdirSync(goldenSpec.runDir), [], 'the golden VM\'s sockets are removed');
      assert.equal(JSON.parse(readFileSync(join(dir, 'firecracker-snapshot.json'), 'utf8')).snapshot_format, '10.0.0');

      const cloneSpec = specOf('c16');
      clone = await backend.snapshots.restore(cloneSpec, dir);
      const ca = await agentOf(clone);
      assert.equal(await run(ca, 'cat /tmp/marker'), 'golden\n', 'the clone resumed the saved VM');
      const mine = events.filter((e) => e.socketPath === join(cloneSpec.runDir, 'firecracker.sock'));
      assert.deepEqual(mine.map((e) => `${e.method} ${e.path} ${e.status}`), ['GET /version 200', 'PUT /snapshot/load 204']);
      const load = mine[1]!;
      assert.deepEqual((load.body as { vsock_override: unknown }).vsock_override, { uds_path: join(cloneSpec.runDir, 'firecracker.vsock') });
      assert.ok(spec16.validateRequest(load).ok);
      assert.equal(spec15.validateRequest(load).ok, false, 'vsock_override would be refused by 1.15');
      ca.shutdown();
      await clone.stop(10_000);
      assert.deepEqual(readdirSync(cloneSpec.runDir), []);
      for (const e of events.filter((x) => x.socketPath.startsWith(work) && x.status !== undefined)) assert.ok(spec16.validateRequest(e).ok, `${e.method} ${e.path} ${JSON.stringify(e.body)}`);
    } finally {
      await golden.stop(0);
      await clone?.stop(0);
    }

    // Another Firecracker version cannot load it (the state format differs): refused before any process.
    delete process.env.FC_DOUBLE_VERSION;
    const older = new FirecrackerBackend({ binary: FIRECRACKER_DOUBLE });
    process.env.FC_DOUBLE_VERSION = '1.16.1';
    const refused = specOf('r15');
    await assert.rejects(older.snapshots!.restore(refused, dir), (e) => isFirecrackerError(e, 'FIRECRACKER_SNAPSHOT') && /firecracker_version "1\.16\.1" but this backend has "1\.15\.1"/.test(e.message));
    assert.equal(existsSync(refused.runDir), false);
  });
});

describe('jailer (stand-in): every clone loads from its own chroot', () => {
  test('chroot-relative snapshot paths, snapshot files hard-linked into the clone\'s jail, jails removed', { timeout: 180_000 }, async () => {
    const chrootBase = join(work, 'jails');
    mkdirSync(chrootBase);
    const backend = new FirecrackerBackend({ binary: FIRECRACKER_DOUBLE, jailer: { binary: FAKE_JAILER, uid: 65534, gid: 65534, chrootBase } });
    const jailDir = (s: BootSpec) => join(chrootBase, 'firecracker-double', jailIdFor(s.id, work));
    const goldenSpec = specOf('jg');
    const golden = await backend.boot(goldenSpec);
    const dir = join(work, 'snapjail');
    let clone: VmHandle | undefined;
    try {
      await agentOf(golden);
      await backend.snapshots.save(golden, dir);
      assert.equal(existsSync(jailDir(goldenSpec)), false, 'the golden VM\'s jail is removed');
      const meta = JSON.parse(readFileSync(join(dir, 'firecracker-snapshot.json'), 'utf8'));
      assert.deepEqual([meta.jailed, meta.vsock_uds_path, meta.snapshot_format], [true, '/firecracker.vsock', '9.0.0']);
      const goldenReqs = events.filter((e) => e.socketPath === join(jailDir(goldenSpec), 'root/run/firecracker.socket'));
      assert.deepEqual(goldenReqs.at(-1)!.body, { snapshot_type: 'Full', snapshot_path: '/vmstate', mem_file_path: '/memory' });

      const cloneSpec = specOf('jc');
      clone = await backend.snapshots.restore(cloneSpec, dir);
      const root = join(jailDir(cloneSpec), 'root');
      for (const f of ['vmstate', 'memory']) assert.equal(statSync(join(root, f)).ino, statSync(join(dir, f)).ino, `${f} hard-linked into the clone's jail`);
      const ca = await agentOf(clone);
      assert.equal(await run(ca, 'echo $((6*7))'), '42\n');
      const mine = events.filter((e) => e.socketPath === join(root, 'run/firecracker.socket'));
      assert.deepEqual(mine.map((e) => `${e.method} ${e.path} ${e.status}`), ['GET /version 200', 'PUT /snapshot/load 204']);
      assert.deepEqual(mine[1]!.body, { snapshot_path: '/vmstate', mem_backend: { backend_type: 'File', backend_path: '/memory' }, track_dirty_pages: false, resume_vm: true });
      ca.shutdown();
      await clone.stop(10_000);
      assert.equal(existsSync(jailDir(cloneSpec)), false, 'the clone\'s jail is removed');
      assert.ok(existsSync(join(dir, 'memory')), 'the snapshot itself stays');
      for (const e of events.filter((x) => x.socketPath.startsWith(chrootBase) && x.status !== undefined)) assert.ok(spec15.validateRequest(e).ok, `${e.method} ${e.path}`);
    } finally {
      await golden.stop(0);
      await clone?.stop(0);
    }
    // The paths inside a jailed snapshot mean nothing outside a jail: refused up front.
    await assert.rejects(new FirecrackerBackend({ binary: FIRECRACKER_DOUBLE }).snapshots!.restore(specOf('nj'), dir), (e) => isFirecrackerError(e, 'FIRECRACKER_SNAPSHOT') && /jailed/.test(e.message));
  });
});

describe('jailer (stand-in), chroot base on another filesystem than the snapshot', () => {
  test('clones still share one memory file: staged once on the jail filesystem, hard-linked into every clone\'s jail', { timeout: 180_000 }, async () => {
    const chrootBase = mkdtempSync('/dev/shm/emb-fcjail-'); // tmpfs: another filesystem than the snapshot in /tmp
    try {
      assert.notEqual(statSync(chrootBase).dev, statSync(work).dev, 'the test needs /dev/shm on another filesystem than the temp dir');
      const backend = new FirecrackerBackend({ binary: FIRECRACKER_DOUBLE, jailer: { binary: FAKE_JAILER, uid: 65534, gid: 65534, chrootBase } });
      const jailDir = (s: BootSpec) => join(chrootBase, 'firecracker-double', jailIdFor(s.id, work));
      const golden = await backend.boot(specOf('xg'));
      const dir = join(work, 'snapxfs');
      const clones: VmHandle[] = [];
      try {
        await agentOf(golden);
        await backend.snapshots.save(golden, dir);
        const specs = [specOf('xc1'), specOf('xc2')];
        for (const s of specs) clones.push(await backend.snapshots.restore(s, dir));
        const inodes = specs.map((s) => statSync(join(jailDir(s), 'root', 'memory')).ino);
        assert.equal(inodes[0], inodes[1], 'both clones map the same memory file');
        assert.notEqual(inodes[0], statSync(join(dir, 'memory')).ino, 'a copy on the jail filesystem (a hard link cannot cross filesystems)');
        for (const c of clones) assert.equal(await run(await agentOf(c), 'echo $((6*7))'), '42\n');
      } finally {
        await golden.stop(0);
        await Promise.all(clones.map((c) => c.stop(0)));
      }
      rmSync(dir, { recursive: true, force: true });
      // The next restore (of any snapshot) removes the copy of a snapshot that is gone.
      const other = join(work, 'snapxfs2');
      mkdirSync(other);
      for (const f of ['vmstate', 'memory']) writeFileSync(join(other, f), f);
      const { stageOnJailFilesystem } = await import('../src/vmm/firecracker/snapshot.ts');
      const staged = stageOnJailFilesystem(other, chrootBase);
      assert.deepEqual(readdirSync(join(chrootBase, '.emberd-snapshots')), [staged.split('/').at(-1)], 'only the live snapshot\'s copy is left');
    } finally {
      rmSync(chrootBase, { recursive: true, force: true });
    }
  });
});
