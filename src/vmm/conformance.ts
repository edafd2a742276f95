// The backend conformance suite: every VMM backend runs these same cases (hono's pattern of one
// shared suite over sibling implementations). A backend that cannot run a case must list it in
// `skip` with the reason, and the reason is printed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend, BootSpec, VmHandle } from './backend.ts';
import { randomBytes } from 'node:crypto';
import { AgentClient } from '../agent/client.ts';
import { isEmberdError } from '../errors.ts';
import { testBootSpec, TEST_BOOT_DEADLINE_MS } from '../../test/helpers/boot-spec.ts';

export type ConformanceCase = 'boot-and-exec' | 'port-forward' | 'forced-stop' | 'killed-from-outside' | 'bad-kernel' | 'snapshot-restore' | 'live-save' | 'shared-memory-clones' | 'shared-memory-fallback';

/** Runs every case against `makeBackend()`, booting the built `pack` (default shell). */
export function runBackendConformance(label: string, makeBackend: () => Backend, opts: { pack?: string; skip?: Partial<Record<ConformanceCase, string>> } = {}): void {
  // A backend without a shared-memory path has nothing to check in those cases.
  const sharedSkip = (b: Backend) => (b.snapshots?.sharedMemoryFile ? undefined : `${label} has no shared-memory restore path`);
  const skip = opts.skip ?? {};
  const base = mkdtempSync(join(tmpdir(), 'emb-conf-'));
  after(() => rmSync(base, { recursive: true, force: true }));
  let n = 0;
  const spec = (over: Partial<BootSpec> = {}): BootSpec => testBootSpec(`conf${n}`, join(base, String(n++)), { pack: opts.pack ?? 'shell', ...over });
  const caseTest = (name: ConformanceCase, fn: () => Promise<void>) => {
    const reason = skip[name] ?? (name.startsWith('shared-memory') ? sharedSkip(makeBackend()) : undefined);
    if (reason) test(`${label}: ${name}`, { skip: reason }, () => {});
    else test(`${label}: ${name}`, { timeout: 180_000 }, fn);
  };
  const ready = async (vm: VmHandle) => {
    const agent = new AgentClient(vm.control);
    await agent.helloUntil(Date.now() + TEST_BOOT_DEADLINE_MS);
    return agent;
  };
  const sh = async (agent: AgentClient, script: string) => {
    const r = await agent.run({ argv: ['sh', '-c', script], timeoutMs: 30_000 });
    assert.equal(r.exitCode, 0, `${script}: ${r.stderr.toString()}`);
    return r.stdout.toString();
  };
  const gone = (vm: VmHandle) => {
    assert.throws(() => process.kill(vm.pid, 0), /ESRCH/, `VMM pid ${vm.pid} still exists`);
    for (const p of vm.resources().paths) assert.equal(existsSync(p), false, `${p} was left behind`);
  };

  caseTest('boot-and-exec', async () => {
    const backend = makeBackend();
    const vm = await backend.boot(spec());
    try {
      assert.ok(vm.pid > 0);
      const agent = await ready(vm);
      const r = await agent.run({ argv: ['sh', '-c', 'echo $((6*7)); echo e >&2; exit 3'], timeoutMs: 30_000 });
      assert.equal(r.stdout.toString(), '42\n');
      assert.equal(r.stderr.toString(), 'e\n');
      assert.equal(r.exitCode, 3);
      for (const p of vm.resources().paths) assert.ok(existsSync(p), `${p} should exist while the VM runs`);
      assert.match(vm.consoleTail(), /./s, 'the console tail is captured');
      agent.shutdown();
      const exit = await vm.stop(10_000);
      assert.equal(exit.signal, null, `a guest SHUTDOWN should end the VMM by itself, got ${exit.reason}`);
    } finally {
      await vm.stop(0);
    }
    gone(vm);
  });

  caseTest('forced-stop', async () => {
    const vm = await makeBackend().boot(spec());
    await ready(vm);
    await vm.stop(0);
    gone(vm);
    await vm.stop(0); // idempotent
  });

  caseTest('killed-from-outside', async () => {
    const vm = await makeBackend().boot(spec());
    const agent = await ready(vm);
    process.kill(vm.pid, 'SIGKILL');
    const exit = await vm.exited;
    assert.equal(exit.signal, 'SIGKILL');
    await agent.closed;
    await assert.rejects(agent.ping(1000), (e) => isEmberdError(e, 'AGENT_DISCONNECTED'));
    gone(vm);
  });

  caseTest('bad-kernel', async () => {
    const s = spec({ kernel: join(base, 'no-such-vmlinux'), deadline: Date.now() + 20_000 });
    await assert.rejects(makeBackend().boot(s), (e) => isEmberdError(e, 'BOOT_FAILED') || isEmberdError(e, 'BOOT_TIMEOUT'));
    assert.deepEqual(existsSync(s.runDir) ? readdirSync(s.runDir) : [], [], 'no socket left in the run dir');
  });

  // Ports over the control stream (docs/protocol.md "CONNECT"): whatever carries it (virtio-serial,
  // vsock), a TCP connection to the guest's loopback moves bytes both ways, in order, under credit.
  caseTest('port-forward', async () => {
    const vm = await makeBackend().boot(spec());
    try {
      const agent = await ready(vm);
      await assert.rejects(agent.connectPort(8001, 10_000), (e) => isEmberdError(e, 'PORT_NOT_LISTENING'));
      await sh(agent, 'busybox nc -ll -p 8000 -e /bin/cat </dev/null >/dev/null 2>&1 &');
      let conn = await agent.connectPort(8000, 10_000).catch(() => undefined);
      for (let i = 0; !conn && i < 100; i++) { // until nc listens
        await sh(agent, 'sleep 0.1');
        conn = await agent.connectPort(8000, 10_000).catch(() => undefined);
      }
      assert.ok(conn, 'nc never listened on 8000');
      const sent = randomBytes(1 << 20); // four windows' worth: credit must come back both ways
      const got: Buffer[] = [];
      let n = 0;
      const all = new Promise<void>((resolve) => conn.on('data', (b: Buffer) => { got.push(b); n += b.length; if (n >= sent.length) resolve(); }));
      conn.write(sent);
      await all;
      assert.ok(Buffer.concat(got).equals(sent), 'the echo came back whole and in order');
      conn.destroy();
    } finally {
      await vm.stop(0);
    }
  });

  caseTest('snapshot-restore', async () => {
    const backend = makeBackend();
    const snapshots = backend.snapshots;
    assert.ok(snapshots, `${label} has no snapshot support: list snapshot-restore in skip, with the reason`);
    const golden = await backend.boot(spec());
    const dir = join(base, `snapshot${n}`);
    try {
      await sh(await ready(golden), 'echo golden > /tmp/state');
      const { bytes } = await snapshots.save(golden, dir);
      assert.ok(bytes > 0, 'the saved state has a size');
    } finally {
      await golden.stop(0);
    }
    gone(golden);
    // Two clones of one saved state run side by side, each with the state, independent afterwards.
    const clones = [await snapshots.restore(spec(), dir), await snapshots.restore(spec(), dir)];
    try {
      const agents = await Promise.all(clones.map(ready));
      for (const [i, agent] of agents.entries()) {
        assert.equal(await sh(agent, 'cat /tmp/state'), 'golden\n', `clone ${i} has the saved files`);
        await sh(agent, `echo ${i} > /tmp/mine`);
      }
      assert.deepEqual(await Promise.all(agents.map((a) => sh(a, 'cat /tmp/mine'))), ['0\n', '1\n'], 'clones do not share writes');
      assert.notEqual(clones[0]!.pid, clones[1]!.pid);
    } finally {
      await Promise.all(clones.map((vm) => vm.stop(0)));
    }
    for (const vm of clones) gone(vm);
    rmSync(dir, { recursive: true, force: true });
  });

  caseTest('live-save', async () => {
    // What pause and fork rest on: a VM with a running process is saved while it goes on (a
    // fork), a clone adopts the saved channel and the process runs there too; the clone is then
    // saved and ended (a pause) and restored again, the process still running, nothing lost.
    const backend = makeBackend();
    const snapshots = backend.snapshots;
    assert.ok(snapshots, `${label} has no snapshot support: list live-save in skip, with the reason`);
    const counter = { argv: ['sh', '-c', 'i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done'] };
    const lines = (chunks: Buffer[]) => Buffer.concat(chunks).toString().split('\n').filter(Boolean).map(Number);
    const follow = (agent: AgentClient, handle: { channel: number }) => {
      const out: Buffer[] = [];
      return { out, callbacks: { onStdout: (b: Buffer) => { out.push(b); } }, agent, handle };
    };
    const until = async (cond: () => boolean, what: string) => {
      for (const end = Date.now() + 30_000; !cond(); await new Promise((r) => setTimeout(r, 50))) if (Date.now() > end) assert.fail(`${what} within 30 s`);
    };
    const parent = await backend.boot(spec());
    const forkDir = join(base, `live${n++}`);
    const pauseDir = join(base, `live${n++}`);
    const vms: VmHandle[] = [parent];
    try {
      const agent = await ready(parent);
      const seen: Buffer[] = [];
      const h = agent.exec(counter, { onStdout: (b) => { seen.push(b); } });
      await until(() => lines(seen).length >= 3, 'the counter runs');
      await agent.suspend(5000);
      let state: ReturnType<AgentClient['suspendedState']> | undefined;
      let atSave = 0;
      await snapshots.save(parent, forkDir, { keepRunning: true, shared: false, onStopped: async () => { await agent.drain(); state = agent.suspendedState(); atSave = lines(seen).length; } });
      agent.unsuspend();
      await until(() => lines(seen).length > atSave + 2, 'the saved VM goes on');

      const clone = await snapshots.restore(spec(), forkDir);
      vms.push(clone);
      const cagent = await ready(clone);
      const got = follow(cagent, h);
      const handles = cagent.adopt(state!, () => got.callbacks);
      assert.ok(handles.has(h.channel), 'the channel is adopted');
      await until(() => lines(got.out).length >= 3, 'the process runs in the clone');
      assert.equal(lines(got.out)[0], atSave, 'the clone goes on from the moment of the save: nothing lost, nothing twice');

      // A pause of the clone: saved and ended, then restored.
      await cagent.suspend(5000);
      await snapshots.save(clone, pauseDir, { shared: false });
      await clone.exited;
      await cagent.closed;
      const paused = cagent.suspendedState();
      const before = lines(got.out);
      cagent.abandon();
      const back = await snapshots.restore(spec(), pauseDir);
      vms.push(back);
      const bagent = await ready(back);
      const again: Buffer[] = [];
      bagent.adopt(paused, () => ({ onStdout: (b) => { again.push(b); } }));
      await until(() => lines(again).length >= 2, 'the process runs after the pause');
      assert.equal(lines(again)[0], before[before.length - 1]! + 1, 'the paused process goes on with its next line');
    } finally {
      await Promise.all(vms.map((vm) => vm.stop(0)));
    }
    for (const vm of vms) gone(vm);
  });

  /** A golden of `pack` saved into a fresh dir; the golden VM is gone afterwards. */
  const saveGolden = async (backend: Backend, pack: string, prepare: (agent: AgentClient) => Promise<void> = async () => {}) => {
    const golden = await backend.boot(spec({ pack } as Partial<BootSpec>));
    const dir = join(base, `snapshot${n++}`);
    try {
      await prepare(await ready(golden));
      await backend.snapshots!.save(golden, dir);
    } finally {
      await golden.stop(0);
    }
    gone(golden);
    return dir;
  };

  caseTest('shared-memory-clones', async () => {
    const backend = makeBackend();
    const snapshots = backend.snapshots!;
    const dir = await saveGolden(backend, 'python', async (a) => { await sh(a, 'echo golden > /tmp/state'); });
    assert.ok(existsSync(snapshots.sharedMemoryFile!(dir)), 'save() leaves the shared memory file');
    const clones = [await snapshots.restore(spec({ pack: 'python' } as Partial<BootSpec>), dir), await snapshots.restore(spec({ pack: 'python' } as Partial<BootSpec>), dir)];
    try {
      for (const vm of clones) assert.equal(vm.restoredFrom, 'shared-memory');
      const agents = await Promise.all(clones.map(ready));
      for (const [i, agent] of agents.entries()) {
        assert.equal(await sh(agent, 'cat /tmp/state'), 'golden\n', `clone ${i} has the saved files`);
        await sh(agent, `echo ${i} > /tmp/mine-${i}`);
      }
      // Each clone sees only its own write: the other's file is absent.
      for (const [i, agent] of agents.entries()) {
        assert.equal(await sh(agent, `cat /tmp/mine-${i}; test ! -e /tmp/mine-${1 - i} && echo absent`), `${i}\nabsent\n`);
      }
      const urandom = await Promise.all(agents.map((a) => sh(a, 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"')));
      assert.equal(urandom[0]!.length, 64);
      assert.notEqual(urandom[0], urandom[1], 'clones read different /dev/urandom bytes');
      const py = await Promise.all(agents.map(async (a) => {
        const r = await a.run({ argv: ['python3', '-c', 'import random; print(random.getrandbits(128))'], timeoutMs: 60_000 });
        assert.equal(r.exitCode, 0, r.stderr.toString());
        return r.stdout.toString();
      }));
      assert.match(py[0]!, /^\d+\n$/);
      assert.notEqual(py[0], py[1], "clones draw different numbers from Python's random");
    } finally {
      await Promise.all(clones.map((vm) => vm.stop(0)));
    }
    for (const vm of clones) gone(vm);
    rmSync(dir, { recursive: true, force: true });
  });

  caseTest('shared-memory-fallback', async () => {
    const backend = makeBackend();
    const snapshots = backend.snapshots!;
    const dir = await saveGolden(backend, opts.pack ?? 'shell');
    const memory = snapshots.sharedMemoryFile!(dir);
    const restoreOnce = async (want: string, why: string) => {
      const vm = await snapshots.restore(spec(), dir);
      try {
        assert.equal(vm.restoredFrom, want, why);
        assert.equal(await sh(await ready(vm), 'echo ok'), 'ok\n', `a clone restored from the ${want} path works (${why})`);
      } finally {
        await vm.stop(0);
      }
      gone(vm);
    };
    const damages: [string, () => void][] = [
      ['the memory file is missing', () => rmSync(memory)],
      ['the memory file is truncated', () => truncateSync(memory, 4096)],
      // Same size, so only QEMU (or zstd) can tell: the start itself must fail over.
      ['the device stream next to the memory file is garbage', () => { const f = join(memory, '..', 'state.zst'); writeFileSync(f, Buffer.alloc(statSync(f).size, 0x55)); }],
    ];
    for (const [why, damage] of damages) {
      damage();
      await restoreOnce('stream', why);
      // The restore started rebuilding the shared file from the stream; once built it is used again.
      await snapshots.prepareShared!(spec(), dir);
      assert.ok(existsSync(memory), `the shared memory file is rebuilt after: ${why}`);
      await restoreOnce('shared-memory', `rebuilt after: ${why}`);
    }
    rmSync(dir, { recursive: true, force: true });
  });
}
