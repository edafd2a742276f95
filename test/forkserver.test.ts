// The python fast path (docs/protocol.md, "Fast path") in a real microVM: `code` execs go through
// the guest's forkserver and must answer what a fresh `python3 -c` answers; timeouts, signals,
// reaping and concurrency hold as for any exec, and a dead forkserver falls back to fresh
// processes. One VM serves every case.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentClient, ExecRequest, ExecResult } from '../src/agent/client.ts';
import { bootTestVm } from './helpers/vm.ts';

let agent: AgentClient;
let stop: () => Promise<void>;

before(async () => { ({ agent, stop } = await bootTestVm('python')); });
after(() => stop?.());

const py = (code: string, extra: Partial<ExecRequest> = {}) => agent.run({ code, timeoutMs: 60_000, ...extra });

/** The same code through the fast path and through a fresh interpreter. */
async function both(code: string, extra: Partial<ExecRequest> = {}): Promise<[ExecResult, ExecResult]> {
  const fast = await py(code, extra);
  const fresh = await py(code, { ...extra, freshProcess: true });
  assert.equal(fast.fastPath, true, 'served by the forkserver');
  assert.equal(fresh.fastPath, false, 'served by a fresh interpreter');
  return [fast, fresh];
}

function assertSame([a, b]: [ExecResult, ExecResult]): ExecResult {
  assert.deepEqual(
    { exitCode: a.exitCode, signal: a.signal, stdout: a.stdout.toString(), stderr: a.stderr.toString() },
    { exitCode: b.exitCode, signal: b.signal, stdout: b.stdout.toString(), stderr: b.stderr.toString() },
  );
  return a;
}

/** Pids of live forkservers (a fresh interpreter looks, so it does not count itself). */
async function forkservers(): Promise<number[]> {
  const r = await py([
    'import os',
    'for p in os.listdir("/proc"):',
    '    try:',
    '        if p.isdigit() and b"<emberd-" + b"forkserver>" in open(f"/proc/{p}/cmdline", "rb").read() and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z": print(p)',
    '    except OSError: pass',
  ].join('\n'), { freshProcess: true });
  return r.stdout.toString().split('\n').filter(Boolean).map(Number);
}

test('print(6*7) takes the fast path; fresh_process forces a fresh interpreter', async () => {
  const [fast, fresh] = await both('print(6*7)');
  assert.equal(fast.stdout.toString(), '42\n');
  assert.equal(fast.exitCode, 0);
  assert.equal(fresh.stdout.toString(), '42\n');
  assert.equal((await forkservers()).length, 1);
});

test('exit statuses, SystemExit and tracebacks are those of a fresh interpreter', async () => {
  for (const [code, status] of [['import sys; sys.exit(3)', 3], ['raise SystemExit("bye")', 1], ['import sys; sys.exit()', 0]] as const) {
    assert.equal(assertSame(await both(code)).exitCode, status, code);
  }
  const r = assertSame(await both('def f():\n    1/0\nf()'));
  assert.equal(r.exitCode, 1);
  assert.equal(r.stderr.toString(), 'Traceback (most recent call last):\n  File "<string>", line 3, in <module>\n  File "<string>", line 2, in f\nZeroDivisionError: division by zero\n');
});

test('stdin, env and cwd; the worker is a session leader whose parent is PID 1', async () => {
  const code = 'import os, sys; print(sys.stdin.read().upper(), os.environ["GREETING"], os.getcwd(), os.getppid(), os.getsid(0) == os.getpid(), sorted(os.listdir("/proc/self/fd")))';
  const r = assertSame(await both(code, { stdin: Buffer.from('piped'), env: { GREETING: 'héllo' }, cwd: '/tmp' }));
  assert.equal(r.stdout.toString(), "PIPED héllo /tmp 1 True ['0', '1', '2', '3']\n");
});

test('a timeout kills the worker and its children', async () => {
  const t0 = Date.now();
  const r = await py('import subprocess\nsubprocess.Popen(["sleep", "1003"])\nwhile True: pass', { timeoutMs: 1000 });
  assert.equal(r.fastPath, true);
  assert.equal(r.timedOut, true);
  assert.equal(r.exitCode, 137);
  assert.ok(Date.now() - t0 < 1000 * 1.1 + 100 + 500, `answered after ${Date.now() - t0} ms`);
  const ps = await agent.run({ argv: ['sh', '-c', 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "'], timeoutMs: 30_000 });
  assert.doesNotMatch(ps.stdout.toString(), /sleep 1003/);
});

test('workers and their orphans are reaped: no zombies', async () => {
  for (let i = 0; i < 3; i++) await py('import subprocess\nsubprocess.Popen(["sleep", "0.2"])');
  await new Promise((r) => setTimeout(r, 1500));
  const r = await py('import glob\nz = []\nfor p in glob.glob("/proc/[0-9]*/stat"):\n  try: s = open(p).read()\n  except OSError: continue\n  if s[s.rindex(")") + 2] == "Z": z.append(s)\nprint(len(z))');
  assert.equal(r.stdout.toString(), '0\n', r.stdout.toString() + r.stderr.toString());
});

test('concurrent fast execs never mix output', async () => {
  const rs = await Promise.all([0, 1, 2, 3].map((k) => py(`for i in range(2000): print("${k}-%d" % i)`)));
  rs.forEach((r, k) => {
    assert.equal(r.fastPath, true);
    assert.equal(r.stdout.toString(), Array.from({ length: 2000 }, (_, i) => `${k}-${i}\n`).join(''));
  });
});

test('two execs never share randomness or state', async () => {
  const code = 'import os, random; print(os.urandom(16).hex(), random.random(), random.getrandbits(64))';
  const [a, b] = [await py(code), await py(code)];
  const [x, y] = [a.stdout.toString().split(' '), b.stdout.toString().split(' ')];
  assert.ok(x.every((v, i) => v !== y[i]), `${x} vs ${y}`);
  await py('import os; os.leak = 1; x = 1');
  assert.equal((await py('import os; print(hasattr(os, "leak"), "x" in globals())')).stdout.toString(), 'False False\n');
});

test('a killed forkserver: the next exec still works, and a new server takes over', async () => {
  const [server] = await forkservers();
  assert.ok(server);
  await agent.run({ argv: ['kill', '-9', String(server)], timeoutMs: 30_000 });
  const r = await py('print(6*7)');
  assert.equal(r.stdout.toString(), '42\n');
  assert.equal(r.exitCode, 0);
  let again = await py('print(6*7)');
  for (let i = 0; i < 20 && !again.fastPath; i++) again = await py('print(6*7)');
  assert.equal(again.fastPath, true, 'the forkserver was restarted');
  const now = await forkservers();
  assert.equal(now.length, 1);
  assert.notEqual(now[0], server);
});
