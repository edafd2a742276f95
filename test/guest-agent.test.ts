// emberd-init in a real microVM (QEMU; TCG where there is no KVM), driven over its control
// channel with the host-side protocol client. One VM serves every case: each case checks that
// the agent is still healthy afterwards, which is part of what it tests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentClient, HelloAck } from '../src/agent/client.ts';
import type { VmHandle } from '../src/vmm/backend.ts';
import { bootTestVm } from './helpers/vm.ts';
import { guestGone as guestGoneIn } from './helpers/guest-procs.ts';
import { testImages } from './helpers/images.ts';

let vm: VmHandle;
let agent: AgentClient;
let ack: HelloAck;
let stop: () => Promise<void>;
const protocolErrors: string[] = [];

before(async () => {
  ({ vm, agent, ack, stop } = await bootTestVm('python', { onProtocolError: (code) => protocolErrors.push(code) }));
});

after(() => stop?.());

const guestGone = (pids: number[]) => guestGoneIn(agent, pids);

/** The pids a script printed, one a line. */
const pidsIn = (out: Buffer) => out.toString().trim().split('\n').map(Number);

async function healthy() {
  const r = await agent.run({ argv: ['true'], timeoutMs: 30_000 });
  assert.equal(r.exitCode, 0, 'the agent still runs commands');
}

test('handshake reports protocol 1, the agent version, capabilities and transport', () => {
  assert.equal(ack.protoVersion, 1);
  assert.match(ack.agentVersion, /^\d+\.\d+\.\d+/);
  assert.ok(ack.capabilities.includes('exec'));
  assert.equal(ack.transport, 'virtio-serial');
});

test('the modules /lib/modules/load-order names are loaded, with no complaint on the console', async () => {
  const listed = testImages().initramfsModules;
  assert.ok(listed.length > 0, 'the image set lists its initramfs modules');
  const r = await agent.run({ argv: ['cat', '/proc/modules'], timeoutMs: 30_000 });
  const loaded = new Set(r.stdout.toString().split('\n').map((line) => line.split(' ')[0]));
  assert.deepEqual(listed.filter((m) => !loaded.has(m)), [], 'listed but not loaded');
  assert.match(vm.consoleTail(), /emberd-init: boot: kernel \d+ ms, modules \d+ ms/);
  assert.doesNotMatch(vm.consoleTail(), /emberd-init: (module |\/lib\/modules)/);
});

test('ping round trip: the PONG echoes any bytes', async () => {
  // ping() resolves only on a PONG whose payload equals these bytes (magic and NUL included).
  await agent.ping(10_000, Buffer.from([0x45, 0x4d, 0, 0xff, 0x0a, 0x80]));
});

test('print(6*7) through the pack interpreter gives 42 and exit 0', async () => {
  const r = await agent.run({ code: 'print(6*7)', timeoutMs: 60_000 });
  assert.equal(r.stdout.toString(), '42\n');
  assert.equal(r.stderr.toString(), '');
  assert.equal(r.exitCode, 0);
  assert.equal(r.signal, 0);
  assert.ok(r.durationUs > 0);
});

test('shell exit codes, stderr, env, cwd and stdin', async () => {
  const r = await agent.run({
    argv: ['sh', '-c', 'echo "$GREETING from $(pwd)"; cat; echo oops >&2; exit 42'],
    env: { GREETING: 'héllo' },
    cwd: '/tmp',
    stdin: Buffer.from('piped\n'),
    timeoutMs: 30_000,
  });
  assert.equal(r.stdout.toString(), 'héllo from /tmp\npiped\n');
  assert.equal(r.stderr.toString(), 'oops\n');
  assert.equal(r.exitCode, 42);
});

test('a missing program exits 127, a non-executable one 126, like a shell', async () => {
  const a = await agent.run({ argv: ['/no/such/program'], timeoutMs: 30_000 });
  assert.equal(a.exitCode, 127);
  assert.match(a.stderr.toString(), /no\/such\/program/);
  const b = await agent.run({ argv: ['/etc/passwd'], timeoutMs: 30_000 });
  assert.equal(b.exitCode, 126);
});

test('a signal-killed process reports 128+n and the signal', async () => {
  const r = await agent.run({ argv: ['sh', '-c', 'kill -TERM $$'], timeoutMs: 30_000 });
  assert.equal(r.signal, 15);
  assert.equal(r.exitCode, 143);
});

test('orphans are reaped: the double-forked children of a script exit and are gone, not zombies', async () => {
  const r = await agent.run({ argv: ['sh', '-c', 'for i in 1 2 3 4 5; do (sh -c "sleep 0.2" & echo $!); done; exit 0'], timeoutMs: 30_000 });
  const orphans = pidsIn(r.stdout);
  assert.equal(orphans.length, 5, r.stdout.toString());
  await guestGone(orphans); // PID 1 reaped each once it exited: a zombie would keep its /proc entry
});

test('a timeout kills a busy loop and all its children', async () => {
  const r = await agent.run({ argv: ['sh', '-c', 'sleep 1000 & echo $!; sleep 1001 & echo $!; while :; do :; done'], timeoutMs: 2000 });
  assert.equal(r.timedOut, true);
  assert.equal(r.signal, 9);
  assert.equal(r.exitCode, 137);
  assert.ok(r.durationUs >= 2_000_000, `killed before its timeout, after ${r.durationUs} us`);
  const children = pidsIn(r.stdout);
  assert.equal(children.length, 2, r.stdout.toString());
  await guestGone(children); // they would sleep 1000 s: gone means killed with the group
});

test('SIGNAL reaches the whole process group', async () => {
  let out = '';
  let started!: (pid: number) => void;
  const child = new Promise<number>((resolve) => { started = resolve; });
  const h = agent.exec({ argv: ['sh', '-c', 'sleep 1002 & echo $!; wait'], timeoutMs: 60_000 }, {
    onStdout: (b) => { out += b.toString(); if (out.includes('\n')) started(Number(out.trim())); },
  });
  const pid = await child; // the group has its second member: the signal must reach it too
  h.signal(9);
  const r = await h.exited;
  assert.equal(r.signal, 9);
  await guestGone([pid]);
});

test('two concurrent execs never mix output', async () => {
  const script = (tag: string) => `i=0; while [ $i -lt 3000 ]; do echo ${tag}$i; i=$((i+1)); done`;
  const [a, b] = await Promise.all([
    agent.run({ argv: ['sh', '-c', script('A')], timeoutMs: 120_000 }),
    agent.run({ argv: ['sh', '-c', script('B')], timeoutMs: 120_000 }),
  ]);
  const la = a.stdout.toString().trimEnd().split('\n');
  const lb = b.stdout.toString().trimEnd().split('\n');
  assert.equal(la.length, 3000);
  assert.equal(lb.length, 3000);
  assert.ok(la.every((l, i) => l === `A${i}`));
  assert.ok(lb.every((l, i) => l === `B${i}`));
});

test('stdin streamed under flow control arrives intact (2 MiB, more than one window)', async () => {
  const data = Buffer.alloc(2 * 1024 * 1024, 'abcdefgh');
  const r = await agent.run({ argv: ['sh', '-c', 'wc -c'], stdin: data, timeoutMs: 120_000 });
  assert.equal(r.stdout.toString().trim(), String(data.length));
});

test('a garbage frame gets an error and the agent keeps serving', async () => {
  protocolErrors.length = 0;
  vm.control.write(Buffer.from('this is not a frame\n'));
  await agent.ping(10_000); // answered after the garbage: its ERROR came first
  assert.deepEqual(protocolErrors, ['BAD_MAGIC']);
  await healthy();
});

test('50 MB of output with a 1 MiB cap arrives truncated and the agent stays healthy', async () => {
  const cap = 1024 * 1024;
  const r = await agent.run({ argv: ['sh', '-c', 'head -c 50000000 /dev/zero; echo done >&2'], outputCap: cap, timeoutMs: 300_000 });
  assert.equal(r.truncated, true);
  assert.equal(r.stdout.length + r.stderr.length, cap);
  assert.equal(r.exitCode, 0);
  await healthy();
});
