// emberctl against a real daemon: the commands a user types, their output and exit codes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';

const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
let d: TestDaemon;

before(async () => { d = await startDaemon(['--pool-size', '0']); });
after(async () => { assert.equal(await d.stop(), 0, d.log()); });

function ctl(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, EMBERD_ADDR: d.addr }, input, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('create, exec (argument, stdin, stream, session, env), ls, inspect, rm', () => {
  const c = ctl(['create', '--pack', 'python']);
  assert.equal(c.code, 0, c.err);
  const id = c.out.trim();
  assert.match(id, /^sb_[a-z0-9]{20}$/);
  assert.deepEqual(ctl(['exec', id, 'print(6*7)']).out, '42\n');
  assert.deepEqual(ctl(['exec', id, '-'], 'print(1+1)\n').out, '2\n');
  const fail = ctl(['exec', id, 'import sys; print("e", file=sys.stderr); sys.exit(4)']);
  assert.deepEqual([fail.code, fail.err], [4, 'e\n']);
  assert.equal(ctl(['exec', '--stream', id, 'for i in range(3): print(i)']).out, '0\n1\n2\n');
  assert.equal(ctl(['exec', '--env', 'A=b=c', id, 'import os; print(os.environ["A"])']).out, 'b=c\n');
  assert.equal(ctl(['exec', '--session', 's', id, 'x = 20']).out, '');
  assert.equal(ctl(['exec', '--session', 's', id, 'x + 22']).out, '42\n');
  const ls = ctl(['--json', 'ls']);
  assert.ok(JSON.parse(ls.out).some((s: { id: string }) => s.id === id));
  assert.match(ctl(['inspect', id]).out, /state:\s+ready/);
  const t = ctl(['timeout', id, '120']);
  assert.equal(t.code, 0, t.err);
  const left = Date.parse(t.out.trim()) - Date.now();
  assert.ok(left > 60_000 && left <= 120_000, `expires in ${left} ms`);
  assert.match(ctl(['inspect', id]).out, new RegExp(`expires:\\s+${t.out.trim()}`));
  assert.equal(ctl(['rm', id]).code, 0);
  const gone = ctl(['inspect', id]);
  assert.equal(gone.code, 1);
  assert.match(gone.err, /SANDBOX_NOT_FOUND/);
});

test('create --on-timeout pause --no-auto-resume, pause, resume, fork: what each prints, SANDBOX_PAUSED while paused', () => {
  const c = ctl(['create', '--pack', 'python', '--on-timeout', 'pause', '--no-auto-resume']);
  assert.equal(c.code, 0, c.err);
  const id = c.out.trim();
  const forks: string[] = [];
  try {
    const info = JSON.parse(ctl(['--json', 'inspect', id]).out);
    assert.deepEqual([info.on_timeout, info.auto_resume, info.paused, info.forked_from], ['pause', false, null, null]);
    assert.match(ctl(['inspect', id]).out, /on timeout:\s+pause, auto-resume off/);
    assert.equal(ctl(['exec', '--session', 's', id, 'x = 41']).code, 0);

    const p = ctl(['pause', id]);
    assert.equal(p.code, 0, p.err);
    assert.match(p.out, new RegExp(`^paused ${id}: \\d+\\.\\d MiB in \\d+ ms, kept until \\S+\\n$`));
    assert.match(ctl(['inspect', id]).out, /state:\s+paused\n[\s\S]*paused:\s+\S+, \d+ bytes on disk/);
    const refused = ctl(['exec', id, 'print(1)']);
    assert.equal(refused.code, 1);
    assert.match(refused.err, /SANDBOX_PAUSED/);
    const j = JSON.parse(ctl(['--json', 'pause', id]).out);
    assert.ok(j.state === 'paused' && j.paused.bytes > 0, JSON.stringify(j));

    const r = ctl(['resume', '--timeout', '900', id]);
    assert.equal(r.code, 0, r.err);
    const m = new RegExp(`^resumed ${id} in \\d+ ms; expires (\\S+)\\n$`).exec(r.out);
    assert.ok(m, r.out);
    assert.ok(Date.parse(m[1]!) > Date.now() + 600_000, `a new lifetime: ${m[1]}`);
    assert.equal(ctl(['exec', '--session', 's', id, 'x + 1']).out, '42\n');

    const f = ctl(['fork', '--count', '2', id]);
    assert.equal(f.code, 0, f.err);
    forks.push(...f.out.trim().split('\n'));
    assert.equal(forks.length, 2, f.out);
    for (const k of forks) {
      assert.match(k, /^sb_[a-z0-9]{20}$/);
      assert.match(ctl(['inspect', k]).out, new RegExp(`forked from:\\s+${id}`));
      assert.equal(ctl(['exec', '--session', 's', k, 'x']).out, '41\n');
    }
    const bad = ctl(['fork', '--count', '0', id]);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /INVALID_REQUEST/);
    const one = JSON.parse(ctl(['--json', 'fork', id]).out);
    assert.ok(Array.isArray(one) && one.length === 1 && one[0].forked_from === id, JSON.stringify(one));
    forks.push(one[0].id);
  } finally {
    for (const k of [...forks, id]) assert.equal(ctl(['rm', k]).code, 0);
  }
});

test('emberctl test runs the whole cycle and says so', () => {
  const r = ctl(['test', '--pack', 'shell']);
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /emberd works/);
});

test('an unreachable daemon is a clear error, not a stack trace', () => {
  const r = spawnSync(process.execPath, [CLI, '--addr', '127.0.0.1:1', 'ls'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /DAEMON_UNREACHABLE/);
  assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/);
});
