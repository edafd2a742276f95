// What confines a VM's QEMU, checked from outside on real VMs: its uid/gid and capabilities, its
// root (/proc/PID/root), its fds, its namespaces, seccomp, its cgroup and limits (skipped with the
// reason where the host's cgroup2 lacks the controllers), that it dies with a SIGKILLed daemon,
// and that a confined VM still boots, execs, snapshots and restores; as root (the full jail) and
// as a non-root emberd (QEMU as that user, in its own namespaces).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { QemuBackend } from '../src/vmm/qemu/qemu-backend.ts';
import type { QemuVm } from '../src/vmm/qemu/qemu-vm.ts';
import { AgentClient } from '../src/agent/client.ts';
import type { VmHandle } from '../src/vmm/backend.ts';
import { probeCgroups } from '../src/vmm/confine/cgroup-v2.ts';
import { vmLimits } from '../src/vmm/confine/vm-limits.ts';
import { isEmberdError } from '../src/errors.ts';
import { testBootSpec, TEST_BOOT_DEADLINE_MS, TEST_MACHINE } from './helpers/boot-spec.ts';
import { testImages } from './helpers/images.ts';
import { isLive } from './helpers/procs.ts';
import { eventually } from './helpers/daemon.ts';
import { totalmem } from 'node:os';

const IS_ROOT = process.getuid?.() === 0;
const NOT_ROOT = IS_ROOT ? false : 'the full jail (uid change, chroot, cgroup) needs emberd as root; this test run is not root';
const CAP_SYS_CHROOT = (1n << 18n).toString(16).padStart(16, '0');
const src = (rel: string) => fileURLToPath(new URL(`../src/${rel}`, import.meta.url));
const NODE = process.execPath;

function status(pid: number): Record<string, string> {
  return Object.fromEntries(readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter(Boolean).map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()];
  }));
}
const ns = (pid: number | 'self', kind: string) => readlinkSync(`/proc/${pid}/ns/${kind}`);
const cgroupOf = (pid: number) => /^0::(.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))?.[1];

async function ready(vm: VmHandle): Promise<AgentClient> {
  const agent = new AgentClient(vm.control);
  await agent.helloUntil(Date.now() + TEST_BOOT_DEADLINE_MS);
  return agent;
}
async function sh(agent: AgentClient, script: string): Promise<string> {
  const r = await agent.run({ argv: ['sh', '-c', script], timeoutMs: 30_000 });
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** Lines a child script reports (JSON), one at a time. */
function reports(child: ChildProcess): () => Promise<Record<string, unknown>> {
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  return async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`the child ended without reporting: ${stderr}`);
    return JSON.parse(value as string) as Record<string, unknown>;
  };
}

test('as root: QEMU runs as 65534:65534 with only CAP_SYS_CHROOT, in an empty chroot, its own namespaces, seccomp and a cgroup', { skip: NOT_ROOT, timeout: 180_000 }, async (t) => {
  const backend = new QemuBackend();
  const base = mkdtempSync(join(tmpdir(), 'emb-confine-'));
  const spec = testBootSpec('confine-a', join(base, 'vm'), { pack: 'shell' });
  const vm = await backend.boot(spec) as QemuVm;
  const pid = vm.pid;
  try {
    const agent = await ready(vm);
    assert.equal(await sh(agent, 'echo $((6*7))'), '42\n', 'a confined VM execs');

    await t.test('uid, gid, groups, capabilities, no_new_privs, seccomp', () => {
      const s = status(pid);
      assert.match(s.Name!, /^qemu-system/, 'the pid is QEMU itself, not a wrapper');
      assert.equal(s.Uid, '65534\t65534\t65534\t65534');
      assert.equal(s.Gid, '65534\t65534\t65534\t65534');
      assert.equal(s.Groups, '');
      for (const k of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) assert.equal(s[k], CAP_SYS_CHROOT, `${k}: only CAP_SYS_CHROOT`);
      assert.equal(s.NoNewPrivs, '1');
      assert.equal(s.Seccomp, '2', 'seccomp filter mode');
    });

    await t.test('its root is the empty, root-owned, read-only jail root: no host path resolves', () => {
      const root = vm.layout.root;
      assert.equal(readlinkSync(`/proc/${pid}/root`), root);
      assert.equal(readlinkSync(`/proc/${pid}/cwd`), root);
      assert.deepEqual(readdirSync(`/proc/${pid}/root`), [], 'QEMU\'s whole filesystem is empty');
      for (const p of ['/etc/passwd', '/root', '/proc/self', '/dev/null', spec.runDir, spec.kernel]) {
        assert.equal(existsSync(`/proc/${pid}/root${p}`), false, `${p} is not reachable from QEMU`);
      }
      const st = statSync(root);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [0, 0, 0o555], 'QEMU cannot write there (nor make a dir to chroot into)');
    });

    await t.test('its fds: the three images read-only, sockets, pipes, anonymous inodes, /dev/null; no directory', () => {
      const images = new Set([spec.kernel, spec.initramfs, spec.packImage]);
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
        assert.equal(statSync(`/proc/${pid}/fd/${fd}`).isDirectory(), false, `fd ${fd} (${link}) is a directory`);
        if (/^(socket|pipe|anon_inode):/.test(link) || link === '/dev/null') continue;
        assert.ok(images.has(link), `fd ${fd} -> ${link} is not one of QEMU's own files`);
        const flags = parseInt(/^flags:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1]!, 8);
        assert.equal(flags & 3, 0, `fd ${fd} (${link}) is open read-only`);
      }
    });

    await t.test('its own pid, net and ipc namespaces: pid 1 there, only a loopback device, no network', () => {
      for (const kind of ['pid', 'net', 'ipc']) assert.notEqual(ns(pid, kind), ns('self', kind), `${kind} namespace`);
      assert.equal(status(pid).NSpid!.split('\t').at(-1), '1');
      const devices = readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n').slice(2).filter(Boolean).map((l) => l.split(':')[0]!.trim());
      assert.deepEqual(devices, ['lo']);
    });

    const probe = probeCgroups(true);
    await t.test('its own cgroup v2, removed with the VM', { skip: probe.host ? false : `no cgroup v2 here: ${probe.why}` }, () => {
      const dir = vm.cgroupDir!;
      assert.ok(dir?.startsWith(`${probe.host!.parent}/qemu-`), `cgroup ${dir}`);
      assert.equal(cgroupOf(pid), dir.slice(probe.host!.mount.length));
      assert.ok(readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').includes(String(pid)));
      assert.match(readFileSync(join(dir, 'cpu.stat'), 'utf8'), /^usage_usec \d+/, 'CPU accounting works even without the cpu controller');
    });
    for (const l of vmLimits({ machine: TEST_MACHINE, accel: backend.info.accel as 'kvm' | 'tcg', hostMemBytes: totalmem() })) {
      const why = !probe.host ? `no cgroup v2 here: ${probe.why}`
        : probe.host.limited.includes(l.controller) ? false
          : `cgroup2 at ${probe.host.mount} offers ${[...probe.host.controllers].join(' ') || 'no controller'}, not ${l.controller}: ${l.file} cannot be set on this host`;
      await t.test(`cgroup limit ${l.file} = ${l.value}`, { skip: why }, () => {
        assert.equal(readFileSync(join(vm.cgroupDir!, l.file), 'utf8').trim(), l.value);
      });
    }
    agent.shutdown();
    await vm.stop(10_000);
    assert.deepEqual(readdirSync(spec.runDir), [], 'the jail is removed');
    if (vm.cgroupDir) assert.equal(existsSync(vm.cgroupDir), false, 'the cgroup is removed');
  } finally {
    await vm.stop(0);
    rmSync(base, { recursive: true, force: true });
  }
});

test('as root: a confined VM snapshots and restores; the clone is confined the same way', { skip: NOT_ROOT, timeout: 180_000 }, async () => {
  const backend = new QemuBackend({ sharedMemory: 'on' });
  const base = mkdtempSync(join(tmpdir(), 'emb-confine-'));
  const snap = join(base, 'snap');
  try {
    const golden = await backend.boot(testBootSpec('confine-g', join(base, 'g'), { pack: 'shell' })) as QemuVm;
    try {
      await sh(await ready(golden), 'echo golden > /tmp/state');
      const { bytes } = await backend.snapshots.save(golden, snap);
      assert.ok(bytes > 0);
    } finally {
      await golden.stop(0);
    }
    assert.deepEqual(readdirSync(snap).sort(), ['shared', 'state.zst'], 'the stream and the shared-memory unit');
    assert.equal(statSync(join(snap, 'state.zst')).uid, 0, 'written by emberd\'s zstd, not by QEMU');
    const spec = testBootSpec('confine-c', join(base, 'c'), { pack: 'shell' });
    const clone = await backend.snapshots.restore(spec, snap) as QemuVm;
    try {
      const agent = await ready(clone);
      assert.equal(await sh(agent, 'cat /tmp/state'), 'golden\n');
      const s = status(clone.pid);
      assert.equal(s.Uid, '65534\t65534\t65534\t65534');
      assert.equal(s.Seccomp, '2');
      assert.equal(readlinkSync(`/proc/${clone.pid}/root`), clone.layout.root);
      assert.deepEqual(readdirSync(`/proc/${clone.pid}/root`), []);
      assert.equal(readdirSync(`/proc/${clone.pid}/fd`).some((fd) => readlinkSync(`/proc/${clone.pid}/fd/${fd}`).includes('state.zst')), false, 'QEMU never opened the snapshot');
    } finally {
      await clone.stop(0);
    }
    assert.deepEqual(readdirSync(spec.runDir), []);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

// The uid change clears PR_SET_PDEATHSIG; setpriv sets it again after, so this must still hold.
test('as root: a SIGKILLed daemon takes its confined QEMU with it; the next start removes the empty cgroup left', { skip: NOT_ROOT, timeout: 180_000 }, async () => {
  const base = mkdtempSync(join(tmpdir(), 'emb-confine-'));
  const spec = testBootSpec('confine-k', join(base, 'k'), { pack: 'shell' });
  const script = `
    const { QemuBackend } = await import(process.env.BACKEND);
    const vm = await new QemuBackend().boot(JSON.parse(process.env.SPEC));
    process.stdout.write(JSON.stringify({ pid: vm.pid, cgroup: vm.cgroupDir }) + '\\n');
    setInterval(() => {}, 1000);`;
  const daemon = spawn(NODE, ['--input-type=module', '-e', script], { env: { ...process.env, BACKEND: src('vmm/qemu/qemu-backend.ts'), SPEC: JSON.stringify(spec) }, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const r = await reports(daemon)();
    const pid = r.pid as number;
    assert.ok(isLive(pid));
    daemon.kill('SIGKILL');
    await eventually(() => !isLive(pid), 10_000, `QEMU ${pid} to die with its daemon`);
    const cgroup = r.cgroup as string | undefined;
    if (cgroup) {
      await eventually(() => readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').trim() === '', 10_000, 'the cgroup to empty');
      const next = await new QemuBackend().boot(testBootSpec('confine-n', join(base, 'n'), { pack: 'shell' }));
      await next.stop(0);
      assert.equal(existsSync(cgroup), false, 'the predecessor\'s empty cgroup was removed');
    }
  } finally {
    daemon.kill('SIGKILL');
    rmSync(base, { recursive: true, force: true });
  }
});

test('as root: an image QEMU\'s uid cannot read fails the boot with what to do, before QEMU starts', { skip: NOT_ROOT }, async () => {
  const base = mkdtempSync(join(tmpdir(), 'emb-confine-'));
  try {
    const kernel = join(base, 'vmlinux');
    writeFileSync(kernel, 'not a kernel');
    chmodSync(kernel, 0o600);
    const spec = testBootSpec('confine-u', join(base, 'u'), { pack: 'shell', kernel });
    await assert.rejects(new QemuBackend().boot(spec), (e) => isEmberdError(e, 'BOOT_FAILED') && /uid 65534:65534, which cannot read .*vmlinux/.test(e.message));
    assert.deepEqual(existsSync(spec.runDir) ? readdirSync(spec.runDir) : [], []);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('--qemu-confine off: QEMU runs as emberd\'s user in emberd\'s namespaces, seccomp only', { timeout: 180_000 }, async () => {
  const backend = new QemuBackend({ confine: { mode: 'off' } });
  assert.match(backend.info.warnings.join('\n'), /confinement is off/);
  const base = mkdtempSync(join(tmpdir(), 'emb-confine-'));
  const vm = await backend.boot(testBootSpec('confine-o', join(base, 'o'), { pack: 'shell' }));
  try {
    await sh(await ready(vm), 'true');
    const s = status(vm.pid);
    assert.equal(s.Uid!.split('\t')[0], String(process.getuid?.()));
    assert.equal(s.Seccomp, '2');
    assert.equal(readlinkSync(`/proc/${vm.pid}/root`), '/');
    assert.equal(ns(vm.pid, 'net'), ns('self', 'net'));
  } finally {
    await vm.stop(0);
    rmSync(base, { recursive: true, force: true });
  }
});

// Run here as root, the case is staged: a child emberd (the backend in a Node process) as uid
// 65534, with hard links of the images in a directory it can read.
test('a non-root emberd: QEMU runs as that user in its own user/pid/net/ipc namespaces; it boots, execs, snapshots and restores', { skip: NOT_ROOT && 'staged as root: the child runs as uid 65534', timeout: 240_000 }, async (t) => {
  const images = testImages();
  const base = mkdtempSync(join(tmpdir(), 'emb-confine-'));
  chmodSync(base, 0o755);
  const files = { kernel: join(base, 'vmlinux'), initramfs: join(base, 'initramfs.cpio'), pack: join(base, 'shell.sqfs') };
  try {
    linkSync(images.kernel, files.kernel);
    linkSync(images.initramfs, files.initramfs);
    linkSync(images.packs.get('shell')!.image, files.pack);
  } catch (e) {
    rmSync(base, { recursive: true, force: true });
    t.skip(`the images cannot be hard-linked into ${tmpdir()} (${(e as Error).message})`);
    return;
  }
  const runBase = join(base, 'run');
  mkdirSync(runBase);
  chownSync(runBase, 65534, 65534);
  const script = `
    const { QemuBackend } = await import(process.env.BACKEND);
    const { AgentClient } = await import(process.env.AGENT);
    const f = JSON.parse(process.env.FILES);
    const spec = (id) => ({ id, runDir: f.runBase + '/' + id, kernel: f.kernel, initramfs: f.initramfs, packImage: f.pack, machine: { vcpus: 1, memoryMib: 256 }, kernelArgs: [], deadline: Date.now() + 90000 });
    const up = async (vm) => { const a = new AgentClient(vm.control); await a.helloUntil(Date.now() + 90000); return a; };
    const sh = async (a, s) => (await a.run({ argv: ['sh', '-c', s], timeoutMs: 30000 })).stdout.toString();
    const report = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
    const next = () => new Promise((r) => process.stdin.once('data', r));
    const backend = new QemuBackend();
    const golden = await backend.boot(spec('nr-golden'));
    const ga = await up(golden);
    report({ pid: golden.pid, self: process.pid, confinement: backend.confinement, exec: await sh(ga, 'echo golden > /tmp/state; echo $((6*7))') });
    await next();
    await backend.snapshots.save(golden, f.runBase + '/snap');
    const clone = await backend.snapshots.restore(spec('nr-clone'), f.runBase + '/snap');
    report({ pid: clone.pid, state: await sh(await up(clone), 'cat /tmp/state') });
    await next();
    await clone.stop(0);
    report({ done: true });`;
  const child = spawn('/usr/bin/setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', '--', NODE, '--input-type=module', '-e', script], {
    cwd: runBase,
    env: { PATH: process.env.PATH, BACKEND: src('vmm/qemu/qemu-backend.ts'), AGENT: src('agent/client.ts'), FILES: JSON.stringify({ ...files, runBase }) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const next = reports(child);
  try {
    const booted = await next();
    assert.equal(booted.exec, '42\n');
    const pid = booted.pid as number;
    const daemonPid = booted.self as number;
    const plan = booted.confinement as { namespaces?: string; chroot: boolean; drop?: unknown; summary: string };
    assert.equal(plan.drop, undefined);
    assert.equal(plan.chroot, false);
    const s = status(pid);
    assert.equal(s.Uid, '65534\t65534\t65534\t65534', 'QEMU runs as the daemon\'s own user');
    assert.equal(s.Seccomp, '2');
    assert.equal(readlinkSync(`/proc/${pid}/root`), '/', 'no chroot without root');
    assert.equal(cgroupOf(pid), cgroupOf(daemonPid), 'no cgroup of its own without root');
    t.diagnostic(`non-root QEMU confinement here: ${plan.summary}`);
    if (plan.namespaces === 'user') {
      for (const kind of ['user', 'pid', 'net', 'ipc']) assert.notEqual(ns(pid, kind), ns(daemonPid, kind), `${kind} namespace`);
      // In a child user namespace QEMU has no capability over emberd's: it cannot ptrace it or read its memory.
      assert.equal(status(pid).CapEff, '0000000000000000');
    }
    child.stdin!.write('\n');
    const restored = await next();
    assert.equal(restored.state, 'golden\n', 'the clone restored from a snapshot taken by a non-root emberd');
    assert.equal(status(restored.pid as number).Uid, '65534\t65534\t65534\t65534');
    child.stdin!.write('\n');
    assert.deepEqual(await next(), { done: true });
  } finally {
    child.kill('SIGKILL');
    rmSync(base, { recursive: true, force: true });
  }
});
