// Sessions wired into the manager and the HTTP layer, with the real guest agent running on the host
// (no VMM) and this host's python3 as the interpreter: runInSession, the session routes, the
// error codes, and teardown with the sandbox. The VM behaviour is test/sessions.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { buildHttpServer } from '../daemon/http/server.ts';
import type { DaemonInfo } from '../daemon/http/info.ts';
import { isEmberdError } from '../errors.ts';
import { testManagers } from '../../test/helpers/test-manager.ts';
import { liveProcessesWith } from '../../test/helpers/procs.ts';
import { eventually } from '../../test/helpers/daemon.ts';

const manager = testManagers('emb-sess-').make({ sandboxes: { defaultPack: 'python' } });
const app = buildHttpServer(manager, { bodyLimit: 1 << 20, info: () => ({}) as DaemonInfo });
after(() => app.close());

const opts = { timeoutMs: 10_000 };
const run = (id: string, name: string, code: string, o: { timeoutMs?: number } = opts) => manager.runInSession(id, name, { code, ...o });

/** Session servers (of any sandbox of this test) alive on the host: two processes each. */
const sessionProcesses = () => liveProcessesWith('<emberd-session>').length;

test('runInSession keeps state; the routes list and delete; destroy ends the interpreters', async () => {
  const sb = await manager.create({ pack: 'python' });
  const a = await run(sb.id, 'main', 'x = 6*7\nx');
  assert.deepEqual({ value: a.value, exitCode: a.exitCode, sessionReset: a.sessionReset }, { value: '42', exitCode: 0, sessionReset: false });
  assert.equal((await run(sb.id, 'main', 'x + 1')).value, '43');
  await run(sb.id, 'other', 'pass');

  const list = await app.inject({ method: 'GET', url: `/sandboxes/${sb.id}/sessions` });
  assert.equal(list.statusCode, 200);
  const sessions = list.json().sessions as { name: string; created_at: string; last_used_at: string; execs: number }[];
  assert.deepEqual(sessions.map((s) => [s.name, s.execs]).sort(), [['main', 2], ['other', 1]]);
  for (const s of sessions) {
    assert.ok(!Number.isNaN(Date.parse(s.created_at)) && !Number.isNaN(Date.parse(s.last_used_at)), 'ISO-8601 times');
  }

  assert.equal((await app.inject({ method: 'DELETE', url: `/sandboxes/${sb.id}/sessions/other` })).statusCode, 204);
  const again = await app.inject({ method: 'DELETE', url: `/sandboxes/${sb.id}/sessions/other` });
  assert.equal(again.statusCode, 404);
  assert.equal(again.json().error.code, 'SESSION_NOT_FOUND');
  assert.equal((await app.inject({ method: 'DELETE', url: `/sandboxes/${sb.id}/sessions/bad%20name` })).json().error.code, 'INVALID_REQUEST');
  assert.equal((await app.inject({ method: 'GET', url: '/sandboxes/sb_00000000000000000000/sessions' })).statusCode, 404);
  assert.equal(sessionProcesses(), 2, 'one session left: its pump and its interpreter');

  await manager.destroy(sb.id);
  await assert.rejects(run(sb.id, 'main', 'x'), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'));
  await eventually(() => sessionProcesses() === 0, 30_000, 'no session process outlives its sandbox');
});

test('a sandbox of a pack without sessions answers SESSIONS_UNSUPPORTED (400)', async () => {
  const sb = await manager.create({ pack: 'shell' });
  try {
    await assert.rejects(run(sb.id, 'main', '1'), (e) => isEmberdError(e, 'SESSIONS_UNSUPPORTED') && e.status === 400);
    const r = await app.inject({ method: 'GET', url: `/sandboxes/${sb.id}/sessions` });
    assert.equal(r.statusCode, 400);
    assert.equal(r.json().error.code, 'SESSIONS_UNSUPPORTED');
  } finally {
    await manager.destroy(sb.id);
  }
});

test('the session limit, and a timeout that needs the kill, through runInSession', async () => {
  const sb = await manager.create({ pack: 'python' });
  try {
    const r = await run(sb.id, 's', 'import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint("ignoring", flush=True)\nwhile True: pass', { timeoutMs: 200 });
    assert.deepEqual({ timedOut: r.timedOut, sessionReset: r.sessionReset, exitCode: r.exitCode }, { timedOut: true, sessionReset: true, exitCode: 137 });
    assert.equal(r.stdout.toString(), 'ignoring\n', 'output up to the kill is kept');
    await Promise.all(Array.from({ length: 16 }, (_, i) => run(sb.id, `n${i}`, 'pass')));
    await assert.rejects(run(sb.id, 'one-too-many', 'pass'), (e) => isEmberdError(e, 'TOO_MANY_SESSIONS') && e.status === 429);
  } finally {
    await manager.destroy(sb.id);
  }
});

test('session_output_lost_when_interpreter_exits: 200,000 bytes then os._exit(3) arrive whole with status 3, 50 times', async () => {
  const sb = await manager.create({ pack: 'python' });
  try {
    for (let i = 0; i < 50; i++) {
      const r = await run(sb.id, `exit${i}`, 'import os, sys\nsys.stdout.write("x" * 200000)\nprint("bye")\nos._exit(3)');
      assert.deepEqual(
        { bytes: r.stdout.length, tail: r.stdout.subarray(-4).toString(), exitCode: r.exitCode, sessionReset: r.sessionReset },
        { bytes: 200004, tail: 'bye\n', exitCode: 3, sessionReset: true },
        `run ${i}`,
      );
    }
  } finally {
    await manager.destroy(sb.id);
  }
});
