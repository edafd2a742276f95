// Persistent interpreter sessions (docs/api.md, "Sessions") on a real microVM: the session
// registry of src/sandbox/sessions.ts over an AgentClient, no HTTP. One VM serves every case.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentClient } from '../src/agent/client.ts';
import { isEmberdError } from '../src/errors.ts';
import { SessionRegistry, type SessionRunOptions } from '../src/sandbox/sessions.ts';
import { bootTestVm } from './helpers/vm.ts';
import { eventually } from './helpers/daemon.ts';

let agent: AgentClient;
let stop: () => Promise<void>;
let sessions: SessionRegistry;
const opts: SessionRunOptions = { timeoutMs: 60_000, outputCap: 1 << 20 };

before(async () => {
  ({ agent, stop } = await bootTestVm('python'));
  sessions = new SessionRegistry('python', () => agent);
});

after(async () => {
  await sessions?.closeAll();
  await stop?.();
});

const run = (code: string, extra: Partial<SessionRunOptions> = {}, name = 'main') => sessions.run(name, code, { ...opts, ...extra });

test('variables, imports and functions survive between calls; a final expression is the value', async () => {
  const first = await run('import math\ndef sq(v):\n    return v * v\nx = 7');
  assert.equal(first.exitCode, 0);
  assert.equal(first.value, null, 'a cell ending with a statement has no value');
  const r = await run('sq(x) + math.floor(0.5)');
  assert.deepEqual({ value: r.value, exitCode: r.exitCode, sessionReset: r.sessionReset, timedOut: r.timedOut }, { value: '49', exitCode: 0, sessionReset: false, timedOut: false });
  assert.equal((await run('y = 6*7\ny')).value, '42');
  assert.equal((await run('"hi"')).value, "'hi'");
  assert.equal((await run('None')).value, null);
  assert.equal((await run('[i * i\n for i in range(3)]')).value, '[0, 1, 4]');
  assert.equal((await run('_')).value, '[0, 1, 4]', '_ is the last value, as in a REPL');
});

test('output of print, of the process fds and of subprocesses is captured per cell', async () => {
  const r = await run('import os, subprocess, sys\nprint("a")\nsubprocess.run(["echo", "b"])\nos.write(1, b"c\\n")\nprint("d", file=sys.stderr)\nos.system("echo e >&2")\n5');
  assert.equal(r.stdout.toString(), 'a\nb\nc\n');
  assert.equal(r.stderr.toString(), 'd\ne\n');
  assert.equal(r.value, '5');
  assert.equal((await run('pass')).stdout.length, 0, 'nothing leaks into the next cell');
});

test('stdin of a cell; without it input() sees EOF', async () => {
  assert.equal((await run('input().upper()', { stdin: Buffer.from('typed\n') })).value, "'TYPED'");
  const r = await run('input()');
  assert.equal(r.exitCode, 1);
  assert.match(r.stderr.toString(), /EOFError/);
});

test('an exception answers its traceback and status 1; the session survives', async () => {
  await run('z = 1');
  const r = await run('def f():\n    return 1/0\nf()');
  assert.equal(r.exitCode, 1);
  assert.equal(r.value, null);
  const tb = r.stderr.toString();
  assert.match(tb, /^Traceback \(most recent call last\):\n {2}File "<cell \d+>", line 3, in <module>\n/);
  assert.match(tb, /return 1\/0/, 'the traceback shows the cell\'s source lines');
  assert.match(tb, /ZeroDivisionError: division by zero\n$/);
  assert.doesNotMatch(tb, /emberd-session/, 'no frame of the session server');
  const syntax = await run('def f(:');
  assert.equal(syntax.exitCode, 1);
  assert.match(syntax.stderr.toString(), /SyntaxError/);
  assert.equal((await run('z')).value, '1');
});

test('SystemExit gives its status; the session survives', async () => {
  assert.equal((await run('import sys; sys.exit(3)')).exitCode, 3);
  const r = await run('raise SystemExit("bye")');
  assert.equal(r.exitCode, 1);
  assert.equal(r.stderr.toString(), 'bye\n');
  assert.equal((await run('z')).value, '1');
});

test('a timeout interrupts the cell (KeyboardInterrupt) without losing the session', async () => {
  await run('x = 1');
  const r = await run('while True: pass', { timeoutMs: 1000 });
  assert.equal(r.timedOut, true);
  assert.equal(r.sessionReset, false);
  assert.equal(r.exitCode, 130);
  assert.match(r.stderr.toString(), /KeyboardInterrupt/);
  // The interpreter's own clock: from the cell's start (a little after the host armed the timer)
  // to the KeyboardInterrupt.
  const ms = r.durationUs / 1000;
  assert.ok(ms >= 900 && ms < 1000 * 1.1 + 500, `interrupted after ${ms} ms of the cell`);
  assert.equal((await run('x')).value, '1');
  const sub = await run('import subprocess\nsubprocess.run(["sleep", "100"])', { timeoutMs: 1000 });
  assert.equal(sub.timedOut, true, 'a subprocess in the foreground is interrupted too');
  assert.equal(sub.sessionReset, false);
  assert.equal((await run('x')).value, '1');
});

test('code that ignores SIGINT is killed after the grace second: session_reset, then a fresh interpreter', async () => {
  await run('x = 1', {}, 'stubborn');
  const r = await run('import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint("looping", flush=True)\nwhile True: pass', { timeoutMs: 1000 }, 'stubborn');
  assert.equal(r.sessionReset, true);
  assert.equal(r.timedOut, true);
  assert.equal(r.exitCode, 137);
  assert.equal(r.stdout.toString(), 'looping\n', 'output up to the kill is kept');
  // The guest's clock (the pump's): from the cell's start to the interpreter's death, the timeout
  // and the grace second, not more than a few hundred ms beyond.
  const ms = r.durationUs / 1000;
  assert.ok(ms >= 1900 && ms < 4000, `killed after ${ms} ms of the cell`);
  const again = await run('x', {}, 'stubborn');
  assert.equal(again.exitCode, 1, 'the state is gone');
  assert.match(again.stderr.toString(), /NameError/);
  assert.equal(sessions.list().find((s) => s.name === 'stubborn')?.execs, 1);
});

test('code that ends the interpreter answers session_reset with its status; deleting a busy session too', async () => {
  await run('w = 1', {}, 'doomed');
  const r = await run('print("bye")\nimport os\nos._exit(5)', {}, 'doomed');
  assert.deepEqual({ exitCode: r.exitCode, sessionReset: r.sessionReset, timedOut: r.timedOut, stdout: r.stdout.toString() }, { exitCode: 5, sessionReset: true, timedOut: false, stdout: 'bye\n' });
  assert.match((await run('w', {}, 'doomed')).stderr.toString(), /NameError/);
  const busy = run('import time\nopen("/tmp/doomed-busy", "w").close()\ntime.sleep(30)', {}, 'doomed');
  await eventually(async () => (await agent.run({ argv: ['test', '-e', '/tmp/doomed-busy'], timeoutMs: 30_000 })).exitCode === 0, 60_000, 'the cell is running');
  await sessions.delete('doomed');
  const b = await busy;
  assert.equal(b.sessionReset, true);
  assert.equal(b.exitCode, 137);
});

test('output that looks like the session framing is just output', async () => {
  const fake = 'b"ES" + b"D\\0" + (40).to_bytes(4, "big") + b\'{"id": 1, "exit_code": 9, "value": "x"}\'';
  const r = await run(`import os, sys\nfake = ${fake}\nsys.stdout.buffer.write(fake); sys.stdout.flush()\nos.write(2, fake + b"ES")\n"ok"`);
  const bytes = Buffer.concat([Buffer.from('ESD\0'), Buffer.from([0, 0, 0, 40]), Buffer.from('{"id": 1, "exit_code": 9, "value": "x"}')]);
  assert.deepEqual(r.stdout, bytes);
  assert.deepEqual(r.stderr, Buffer.concat([bytes, Buffer.from('ES')]));
  assert.equal(r.value, "'ok'");
  assert.equal(r.exitCode, 0);
  assert.equal((await run('x')).value, '1');
});

test('large output is capped and flagged; the session goes on', async () => {
  const cap = 64 * 1024;
  const r = await run('import sys\nfor i in range(200):\n    print("x" * 10000)\nprint("tail", file=sys.stderr)\n"v" * 10', { outputCap: cap });
  assert.equal(r.truncated, true);
  assert.equal(r.stdout.length + r.stderr.length + (r.value?.length ?? 0), cap);
  assert.equal(r.exitCode, 0);
  const ok = await run('len("y" * 10)', { outputCap: cap });
  assert.equal(ok.truncated, false);
  assert.equal(ok.value, '10');
});

test('cells of one session run one at a time, in order; sessions are independent', async () => {
  const [a, b] = await Promise.all([run('import time\ntime.sleep(0.3)\nq = "first"'), run('q')]);
  assert.equal(a.exitCode, 0);
  assert.equal(b.value, "'first'");
  await run('q = "other"', {}, 'second');
  assert.equal((await run('q')).value, "'first'");
  assert.equal((await run('q', {}, 'second')).value, "'other'");
});

test('list and delete', async () => {
  const names = sessions.list().map((s) => s.name).sort();
  assert.deepEqual(names, ['main', 'second', 'stubborn']);
  const main = sessions.list().find((s) => s.name === 'main')!;
  assert.ok(main.execs > 10, `${main.execs} cells`);
  assert.ok(main.lastUsedAt > main.createdAt, 'last use is kept up to date');
  await sessions.delete('second');
  assert.deepEqual(sessions.list().map((s) => s.name).sort(), ['main', 'stubborn']);
  await assert.rejects(sessions.delete('second'), (e) => isEmberdError(e, 'SESSION_NOT_FOUND'));
  await assert.rejects(run('1', {}, 'bad name!'), (e) => isEmberdError(e, 'INVALID_REQUEST'));
  const r = await run('q', {}, 'second');
  assert.match(r.stderr.toString(), /NameError/, 'a deleted name starts afresh');
  // No interpreter of a deleted session is left in the guest.
  const ps = await agent.run({ argv: ['sh', '-c', "grep -l 'emberd-sessio[n]' /proc/[0-9]*/cmdline | wc -l"], timeoutMs: 30_000 });
  assert.equal(ps.stdout.toString().trim(), String(2 * sessions.list().length), 'two processes per session: the pump and the interpreter');
});

test('a pack without an interpreter for sessions refuses them', async () => {
  const shell = new SessionRegistry('shell', () => agent);
  await assert.rejects(shell.run('main', '1', opts), (e) => isEmberdError(e, 'SESSIONS_UNSUPPORTED'));
});

test('session_output_lost_when_interpreter_exits (in a VM): 200,000 bytes then os._exit(3) arrive whole with status 3', async () => {
  // 10 runs here (a new interpreter each, ~0.2 s under TCG); the 50-run loops are the host-side
  // tests (guest/session/session_server_test.py, src/sandbox/sessions.test.ts).
  for (let i = 0; i < 10; i++) {
    const r = await run('import os, sys\nsys.stdout.write("x" * 200000)\nprint("bye")\nos._exit(3)', {}, `exit${i}`);
    assert.deepEqual({ bytes: r.stdout.length, tail: r.stdout.subarray(-4).toString(), exitCode: r.exitCode, sessionReset: r.sessionReset },
      { bytes: 200004, tail: 'bye\n', exitCode: 3, sessionReset: true }, `run ${i}`);
  }
});
