// A hostile guest workload in a real microVM (QEMU; TCG where there is no KVM), through the agent
// directly (no daemon): fork bomb, memory bomb, disk fill, stdout+stderr floods, busy loops, and
// the VMM SIGKILLed mid-exec. The sandbox's limits come in HELLO (docs/protocol.md): disk_bytes
// sizes the writable layer, pids_max bounds the exec cgroup; memory.max of that cgroup keeps a
// reserve for the agent. Each case checks that the agent still answers, that the next exec works,
// and that nothing is left on the host (no VMM process beyond the shared VM's).
//
// One VM serves every case but the last: each case cleans up after itself and checks it did (no
// process of the bomb left, the disk emptied), which is part of what it tests. The VMM SIGKILL
// case gets its own VM, since it destroys it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { AgentClient, type ExecRequest } from '../src/agent/client.ts';
import { FrameDecoder, MsgType, encodeMessage } from '../src/agent/codec.ts';
import { isEmberdError } from '../src/errors.ts';
import { bootTestVm, type TestVm } from './helpers/vm.ts';
import { eventually } from './helpers/daemon.ts';
import { isLive } from './helpers/procs.ts';

let shared: TestVm;
let agent: AgentClient;
/** The shared VM's VMM processes on the host (QEMU and its unshare wrapper). */
let sharedVmm: number[];

const EXECS = '/sys/fs/cgroup/execs';
const MIB = 1 << 20;

/** Live processes of this host whose parent is this test process: the VMM wrappers it spawned. */
function ourChildren(): number[] {
  const kids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && isLive(Number(p))) kids.push(Number(p));
    } catch { /* gone meanwhile */ }
  }
  return kids.sort((a, b) => a - b);
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** QEMU and, when it runs under a wrapper this process spawned, that wrapper. */
function vmmProcesses(t: TestVm): number[] {
  const up = parentOf(t.vm.pid);
  return up === process.pid ? [t.vm.pid] : [t.vm.pid, up];
}

/** 0 leaks on the host: the shared VM's VMM is the only one this process runs. */
function assertNoHostLeaks(): void {
  assert.deepEqual(sharedVmm.filter((p) => !isLive(p)), [], 'the shared VM is still running');
  const wrappers = sharedVmm.filter((p) => parentOf(p) === process.pid);
  assert.deepEqual(ourChildren(), wrappers.length ? wrappers : [sharedVmm[0]!], 'no VMM beyond the shared VM');
}

const sh = (script: string, extra: Partial<ExecRequest> = {}) =>
  agent.run({ argv: ['sh', '-c', script], timeoutMs: 60_000, ...extra });

async function out(script: string): Promise<string> {
  const r = await sh(script);
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

/** A flat-keyed cgroup file (pids.events, memory.events) as numbers. */
async function cgroupEvents(file: string): Promise<Record<string, number>> {
  return Object.fromEntries((await out(`cat ${EXECS}/${file}`)).split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
}

/** The agent answers, and a fresh process and a fast-path python exec both work. */
async function healthy(): Promise<void> {
  await agent.ping(30_000);
  assert.equal((await sh('echo ok')).stdout.toString(), 'ok\n', 'a shell exec works');
  const py = await agent.run({ code: 'print(6*7)', timeoutMs: 60_000 });
  assert.equal(py.stdout.toString(), '42\n', 'a python exec works');
  assert.equal(py.fastPath, true, 'through the forkserver, which lives outside the exec cgroup');
}

/** Until the exec cgroup holds no process but the one looking: whatever a case started is gone. */
const execCgroupEmpty = () => eventually(async () => (await out(`cat ${EXECS}/cgroup.procs`)).split('\n').length === 1, 60_000, 'the exec cgroup empty');

before(async () => {
  shared = await bootTestVm('python');
  agent = shared.agent;
  sharedVmm = vmmProcesses(shared);
});

after(async () => {
  await shared?.stop();
  if (sharedVmm) assert.deepEqual(sharedVmm.filter(isLive), [], 'the shared VM\'s VMM is gone');
});

test('limits at handshake: HELLO applies disk_bytes and pids_max, HELLO_ACK reports them; execs run in the exec cgroup, the agent and the forkserver outside it', async () => {
  assert.equal(shared.ack.diskBytes, 256 * MIB, 'the boot-time size (emberd.overlay_size, default 256m)');
  assert.ok(shared.ack.pidsMax! > 0 && shared.ack.memoryMax! > 0, JSON.stringify(shared.ack));
  const ack = await agent.hello(30_000, { diskBytes: 48 * MIB, pidsMax: 200 });
  assert.equal(ack.diskBytes, 48 * MIB);
  assert.equal(ack.pidsMax, 200);
  assert.equal(await out('df -k / | tail -1 | awk \'{print $2}\''), String(48 * 1024), 'df of / shows the asked size');
  assert.equal(await out(`cat ${EXECS}/pids.max`), '200');

  // memory.max keeps a reserve for the agent below what the guest has.
  const memTotal = Number(/MemTotal:\s+(\d+)/.exec(await out('cat /proc/meminfo'))![1]) * 1024;
  assert.ok(ack.memoryMax! < memTotal && ack.memoryMax! >= memTotal / 2, `memory.max ${ack.memoryMax} of ${memTotal}`);

  // A shell exec and a python exec (fast path: a forkserver worker) are in the exec cgroup and
  // killable; PID 1 is protected from the OOM killer; the forkserver is in the root cgroup.
  assert.equal(await out('cat /proc/self/cgroup /proc/self/oom_score_adj /proc/1/oom_score_adj; grep -x 1 /sys/fs/cgroup/cgroup.procs'), '0::/execs\n0\n-1000\n1');
  const py = await agent.run({ code: 'import os; print(open("/proc/self/cgroup").read().strip(), open("/proc/self/oom_score_adj").read().strip(), os.getppid())', timeoutMs: 60_000 });
  assert.equal(py.fastPath, true);
  assert.equal(py.stdout.toString(), '0::/execs 0 1\n');
  // Parked workers (comm emberd-parked) share the server's cmdline and wait in the root cgroup
  // until a request moves them into the exec cgroup; the intermediate forks that make them are
  // the server's children (PPid not 1) and may vanish between the listing and the read (hence
  // the final `true`).
  const server = await out('for p in $(cat /sys/fs/cgroup/cgroup.procs); do grep -q emberd-forkserver /proc/$p/cmdline 2>/dev/null && [ "$(cat /proc/$p/comm 2>/dev/null)" != emberd-parked ] && grep -q "^PPid:[[:space:]]*1$" /proc/$p/status 2>/dev/null && echo $p $(cat /proc/$p/oom_score_adj); done; true');
  assert.match(server, /^\d+ 0$/, 'one forkserver, in the root cgroup, killable');

  // Values that cannot be had are refused with the reason, and change nothing.
  await sh('head -c 3000000 /dev/zero > /root/held');
  for (const [extra, why] of [
    [{ diskBytes: 1 * MIB }, /below the \d+ bytes the writable layer already holds/],
    [{ diskBytes: 0 }, /not a size/],
    [{ pidsMax: 1 << 30 }, /above this guest's ceiling/],
    [{ diskBytes: 64 * MIB, pidsMax: 1 << 30 }, /above this guest's ceiling/],
  ] as const) {
    await assert.rejects(agent.hello(30_000, extra), (e) => isEmberdError(e, 'INVALID_REQUEST') && why.test(e.message), JSON.stringify(extra));
  }
  const same = await agent.hello(30_000);
  assert.deepEqual([same.diskBytes, same.pidsMax], [48 * MIB, 200], 'a refused HELLO changed no limit');
  await sh('rm /root/held');
  // pids_max 0: back to the guest's ceiling (the boot-time value).
  assert.equal((await agent.hello(30_000, { pidsMax: 0 })).pidsMax, shared.ack.pidsMax);
  assertNoHostLeaks();
});

test('fork bomb with pids_max: the bomb hits the limit, the agent answers throughout, the next exec works, nothing of it is left', async () => {
  await agent.hello(30_000, { pidsMax: 64 });
  const before = (await cgroupEvents('pids.events')).max ?? 0;
  // Every process forks forever; forks past pids.max fail and are retried. The leader sleeps, so
  // the exec lasts until it is killed, taking the whole process group with it.
  const bomb = agent.exec({ argv: ['sh', '-c', 'b() { b | b & }; b; sleep 1000'], timeoutMs: 120_000, outputCap: 65536 });
  let pings = 0;
  let bombing = true;
  const pinger = (async () => { while (bombing) { await agent.ping(30_000); pings++; } })();
  try {
    await eventually(async () => ((await cgroupEvents('pids.events')).max ?? 0) > before, 60_000, 'forks refused at pids.max');
    // While the bomb holds every pid the cgroup allows, the agent (outside it) still starts execs:
    // moving into the cgroup ignores pids.max. Only their own forks would fail.
    const during = await agent.run({ argv: ['cat', `${EXECS}/pids.current`], timeoutMs: 60_000 });
    assert.equal(during.exitCode, 0, during.stderr.toString());
    // The bomb is bounded: at most pids.max processes, plus the one that moved in to look.
    assert.ok(Number(during.stdout) <= 64 + 1, `pids.current ${during.stdout.toString().trim()} during the bomb`);
    assert.equal((await agent.run({ code: 'print(6*7)', timeoutMs: 60_000 })).stdout.toString(), '42\n', 'the fast path works during the bomb');
  } finally {
    bomb.signal(9);
    bombing = false;
    await pinger;
  }
  const exit = await bomb.exited;
  assert.deepEqual([exit.signal, exit.exitCode], [9, 137]);
  assert.ok(pings > 0, 'pings answered during the bomb');
  await execCgroupEmpty();
  await healthy();
  await agent.hello(30_000, { pidsMax: 0 });
  assertNoHostLeaks();
});

test('memory bomb: the OOM killer acts inside the exec cgroup, the exec answers a non-zero status, the agent survives, the next exec works', async () => {
  const before = (await cgroupEvents('memory.events')).oom_kill ?? 0;
  const r = await agent.run({ code: 'a = []\nwhile True: a.append(b"\\x01" * (1 << 20))', timeoutMs: 120_000 });
  assert.deepEqual([r.signal, r.exitCode, r.timedOut], [9, 137, false], `killed by the OOM killer: ${r.stderr.toString()}`);
  assert.ok(((await cgroupEvents('memory.events')).oom_kill ?? 0) > before, 'memory.events counts the OOM kill');
  // The same in a fresh process whose child is the hog: the child is killed, the leader reports it.
  const fresh = await sh('python3 -c "a = []\nwhile True: a.append(b\'\\x01\' * (1 << 20))"; echo "child status $?"');
  assert.equal(fresh.stdout.toString(), 'child status 137\n');
  await execCgroupEmpty();
  await healthy();
  assertNoHostLeaks();
});

test('disk fill with disk_bytes: ENOSPC inside, df of / shows the asked size, delete and write again works', async () => {
  await agent.hello(30_000, { diskBytes: 32 * MIB });
  assert.equal(await out('df -k / | tail -1 | awk \'{print $2}\''), String(32 * 1024));
  const fill = await agent.run({
    code: [
      'import errno, os',
      'n = 0',
      'try:',
      '    with open("/root/fill", "wb") as f:',
      '        while True:',
      '            n += f.write(b"\\0" * 65536)',
      '            f.flush()',
      'except OSError as e:',
      '    print(errno.errorcode[e.errno], n)',
    ].join('\n'),
    timeoutMs: 120_000,
  });
  const [code, written] = fill.stdout.toString().trim().split(' ');
  assert.equal(code, 'ENOSPC', fill.stdout.toString() + fill.stderr.toString());
  assert.ok(Number(written) > 30 * MIB && Number(written) <= 32 * MIB, `${written} bytes written before ENOSPC`);
  // Full: the agent and execs still work (the agent needs no disk; a python exec writes no .pyc).
  await healthy();
  assert.match((await sh('echo more >> /root/fill')).stderr.toString(), /No space left on device/);
  assert.equal(await out('rm /root/fill; head -c 8388608 /dev/zero > /root/again && wc -c < /root/again && rm /root/again'), '8388608');
  await agent.hello(30_000, { diskBytes: 256 * MIB });
  assertNoHostLeaks();
});

test('stdout and stderr floods at once: bounded by the output cap, truncated flagged', async () => {
  const cap = 1 * MIB;
  const r = await sh('head -c 16000000 /dev/zero | tr "\\0" o & head -c 16000000 /dev/zero | tr "\\0" e >&2; wait', { outputCap: cap, timeoutMs: 120_000 });
  assert.equal(r.exitCode, 0, r.stderr.subarray(0, 200).toString());
  assert.equal(r.truncated, true);
  assert.ok(r.stdout.length + r.stderr.length <= cap, `${r.stdout.length} + ${r.stderr.length} bytes kept`);
  assert.ok(r.stdout.length > 0 && r.stderr.length > 0, 'both streams got through');
  assert.ok(/^o*$/.test(r.stdout.toString()) && /^e*$/.test(r.stderr.toString()), 'the streams are not mixed up');
  await healthy();
  assertNoHostLeaks();
});

test('a busy loop on every vCPU: another exec still answers, the agent too', async () => {
  const n = Number(await out('nproc'));
  const spinning: Promise<void>[] = [];
  const loops = Array.from({ length: n }, () => {
    let started!: () => void;
    spinning.push(new Promise<void>((r) => { started = r; }));
    return agent.exec({ argv: ['sh', '-c', 'echo spinning; while :; do :; done'], timeoutMs: 120_000 }, { onStdout: () => started() });
  });
  try {
    await Promise.all(spinning);
    await healthy();
  } finally {
    for (const l of loops) l.signal(9);
  }
  for (const l of loops) assert.equal((await l.exited).signal, 9);
  await execCgroupEmpty();
  assertNoHostLeaks();
});

test('a guest that does not apply the limits it was sent: the handshake fails with a code, never silently', async () => {
  // Scripted agents (no VM): one that predates the limits (it skips the unknown tags and reports
  // none), one that cannot enforce them. The real guest's refusals are the first case above.
  const scripted = (ack: Record<string, unknown>) => {
    const decoder = new FrameDecoder();
    const stream: Duplex = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, done) {
        for (const f of decoder.push(chunk)) {
          if (f.type === MsgType.HELLO) stream.push(encodeMessage('HELLO_ACK', 0, { proto_version: 1, agent_version: '0.0.9', ...ack }));
        }
        done();
      },
    });
    return new AgentClient(stream);
  };
  const old = scripted({});
  assert.equal((await old.hello(5000)).diskBytes, undefined, 'asking for no limit: fine');
  await assert.rejects(old.hello(5000, { diskBytes: MIB }), (e) => isEmberdError(e, 'AGENT_VERSION_MISMATCH') && /disk_bytes/.test(e.message));
  await assert.rejects(old.hello(5000, { pidsMax: 10 }), (e) => isEmberdError(e, 'AGENT_VERSION_MISMATCH') && /pids_max/.test(e.message));
  old.close();
  const unable = scripted({ limits_error: 'LIMIT_UNSUPPORTED', limits_message: 'no cgroup v2 pids controller' });
  await assert.rejects(unable.hello(5000, { pidsMax: 10 }), (e) => isEmberdError(e, 'BOOT_FAILED') && /no cgroup v2 pids controller/.test(e.message));
  unable.close();
  assertNoHostLeaks();
});

test('VMM SIGKILL mid-exec (its own VM): the exec rejects with AGENT_DISCONNECTED at once, no VMM is left', async () => {
  const t = await bootTestVm('shell');
  const vmm = vmmProcesses(t);
  try {
    let started!: () => void;
    const running = new Promise<void>((r) => { started = r; });
    const h = t.agent.exec({ argv: ['sh', '-c', 'echo started; sleep 1000'], timeoutMs: 120_000 }, { onStdout: () => started() });
    await running;
    const t0 = performance.now();
    process.kill(t.vm.pid, 'SIGKILL');
    await assert.rejects(h.exited, (e) => isEmberdError(e, 'AGENT_DISCONNECTED'));
    console.log(`# exec rejected ${(performance.now() - t0).toFixed(1)} ms after the SIGKILL`);
    assert.equal((await t.vm.exited).signal, 'SIGKILL');
    await eventually(() => vmm.every((p) => !isLive(p)), 10_000, 'the VMM and its wrapper gone');
  } finally {
    await t.stop();
  }
  assert.deepEqual(t.vm.resources().paths.filter((p) => existsSync(p)), [], 'no file of the VM left');
  assertNoHostLeaks();
});
