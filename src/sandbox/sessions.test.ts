// Sessions wired into the manager and the HTTP layer, with the real guest agent running on the host
// (no VMM) and this host's python3 as the interpreter: runInSession, the session routes, the
// error codes, and teardown with the sandbox. The VM behaviour is test/sessions.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
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

const REPRS = 'class Chart:\n    def _repr_png_(self): return b"\\x89PNG"\n    def _repr_html_(self): return "<img>"\n    def __repr__(self): return "<Chart>"\n';

test('rich outputs: display() and the final expression come back as MIME bundles, through runInSession and the exec route', async () => {
  const sb = await manager.create({ pack: 'python' });
  try {
    const r = await run(sb.id, 'main', `${REPRS}print("a")\ndisplay(Chart())\nChart()`);
    assert.deepEqual({ value: r.value, stdout: r.stdout.toString(), exitCode: r.exitCode }, { value: '<Chart>', stdout: 'a\n', exitCode: 0 });
    const bundle = { 'image/png': Buffer.from('\x89PNG', 'latin1').toString('base64'), 'text/html': '<img>', 'text/plain': '<Chart>' };
    assert.deepEqual(r.results, [{ ...bundle, is_main_result: false }, { ...bundle, is_main_result: true }]);
    assert.deepEqual((await run(sb.id, 'main', 'x = 1')).results, [], 'a statement has no result');

    const res = await app.inject({ method: 'POST', url: `/sandboxes/${sb.id}/exec`, payload: { session: 'main', code: 'display({"k": 1})\n6*7' } });
    assert.equal(res.statusCode, 200, res.body);
    const j = res.json();
    assert.deepEqual([j.value, j.session_reset, j.results], ['42', false, [{ 'text/plain': "{'k': 1}", is_main_result: false }, { 'text/plain': '42', is_main_result: true }]]);
  } finally {
    await manager.destroy(sb.id);
  }
});

test('rich outputs: a bundle over the output cap is dropped whole and flags truncated', async () => {
  const small = testManagers('emb-sess-cap-').make({ sandboxes: { defaultPack: 'python' }, exec: { defaultTimeoutMs: 10_000, maxTimeoutMs: 60_000, outputCap: 4096 } });
  const sb = await small.create({ pack: 'python' });
  try {
    const r = await small.runInSession(sb.id, 'main', { code: 'class Big:\n    def _repr_png_(self): return b"x" * 10000\ndisplay(Big())\nprint("after")\n1' });
    assert.deepEqual({ truncated: r.truncated, stdout: r.stdout.toString(), results: r.results }, { truncated: true, stdout: 'after\n', results: [{ 'text/plain': '1', is_main_result: true }] });
  } finally {
    await small.destroy(sb.id);
  }
});

/** The NDJSON lines of a streamed exec, runs of stdout (stderr) events joined: print makes two writes. */
function lines(body: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const e of body.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)) {
    const last = out.at(-1);
    if (last && (e.type === 'stdout' || e.type === 'stderr') && last.type === e.type) last.data = String(last.data) + String(e.data);
    else out.push(e);
  }
  return out;
}

test('a streamed session cell: stdout/stderr events as they come, a result event per bundle, then the exit with the value', async () => {
  const sb = await manager.create({ pack: 'python' });
  try {
    const res = await app.inject({
      method: 'POST', url: `/sandboxes/${sb.id}/exec`, headers: { accept: 'application/x-ndjson' },
      payload: { session: 'main', code: `${REPRS}import sys\nprint("a", flush=True)\nprint("e", file=sys.stderr, flush=True)\ndisplay(Chart())\nprint("b")\nChart()` },
    });
    assert.equal(res.statusCode, 200, res.body);
    assert.match(String(res.headers['content-type']), /application\/x-ndjson/);
    const events = lines(res.body);
    const bundle = { 'image/png': Buffer.from('\x89PNG', 'latin1').toString('base64'), 'text/html': '<img>', 'text/plain': '<Chart>' };
    // stdout and stderr are two pipes (no order between them); a bundle keeps its place in both.
    const before = events.slice(0, 2).sort((x, y) => String(x.type).localeCompare(String(y.type)));
    assert.deepEqual(before, [{ type: 'stderr', data: 'e\n' }, { type: 'stdout', data: 'a\n' }]);
    assert.deepEqual(events.slice(2, -1), [
      { type: 'result', ...bundle, is_main_result: false },
      { type: 'stdout', data: 'b\n' },
      { type: 'result', ...bundle, is_main_result: true },
    ]);
    const exit = events.at(-1)!;
    assert.deepEqual({ ...exit, duration_ms: 0 }, { type: 'exit', exit_code: 0, duration_ms: 0, timed_out: false, truncated: false, value: '<Chart>', session_reset: false });
    const again = await run(sb.id, 'main', 'Chart');
    assert.equal(again.value, "<class '__main__.Chart'>", 'the streamed cell ran in the session');

    const reset = lines((await app.inject({ method: 'POST', url: `/sandboxes/${sb.id}/exec`, headers: { accept: 'application/x-ndjson' }, payload: { session: 'main', code: 'import os\nos._exit(4)' } })).body);
    assert.deepEqual(reset.map((e) => [e.type, e.exit_code, e.session_reset, e.value]), [['exit', 4, true, null]]);
  } finally {
    await manager.destroy(sb.id);
  }
});

test('a streamed session cell that cannot run answers its error, not a stream', async () => {
  const sh = await manager.create({ pack: 'shell' });
  try {
    const res = await app.inject({ method: 'POST', url: `/sandboxes/${sh.id}/exec`, headers: { accept: 'application/x-ndjson' }, payload: { session: 'main', code: '1' } });
    assert.deepEqual([res.statusCode, res.json().error.code], [400, 'SESSIONS_UNSUPPORTED']);
    const gone = await app.inject({ method: 'POST', url: '/sandboxes/sb_00000000000000000000/exec', headers: { accept: 'application/x-ndjson' }, payload: { session: 'main', code: '1' } });
    assert.equal(gone.statusCode, 404);
  } finally {
    await manager.destroy(sh.id);
  }
});

test('a client that leaves a streamed session cell interrupts it; the session keeps its state', async () => {
  const sb = await manager.create({ pack: 'python' });
  const dir = mkdtempSync('/tmp/emb-sess-leave-');
  const server = buildHttpServer(manager, { bodyLimit: 1 << 20, info: () => ({}) as DaemonInfo });
  try {
    await run(sb.id, 'main', 'kept = 1');
    const addr = await server.listen({ host: '127.0.0.1', port: 0 });
    const ac = new AbortController();
    // Its own timeout is the longest there is: only the client's leaving can interrupt it in time.
    const code = `import time\nprint("looping", flush=True)\ntry:\n    while True: time.sleep(0.01)\nexcept KeyboardInterrupt:\n    open(${JSON.stringify(`${dir}/interrupted`)}, "w").close()\n    raise`;
    const res = await fetch(`${addr}/sandboxes/${sb.id}/exec`, {
      method: 'POST', headers: { accept: 'application/x-ndjson', 'content-type': 'application/json' },
      body: JSON.stringify({ session: 'main', code, timeout_ms: 60_000 }), signal: ac.signal,
    });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    const event = JSON.parse(first.split('\n')[0]!) as { type: string; data: string };
    assert.ok(event.type === 'stdout' && event.data.startsWith('looping'), `the cell runs: ${first}`);
    ac.abort();
    await eventually(() => existsSync(`${dir}/interrupted`), 20_000, 'the cell got KeyboardInterrupt when its client left');
    const r = await run(sb.id, 'main', 'kept');
    assert.deepEqual({ value: r.value, sessionReset: r.sessionReset }, { value: '1', sessionReset: false });
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
    await manager.destroy(sb.id);
  }
});

test('result_event_type_forged_by_bundle: a bundle with a "type" key cannot pose as another stream event', async () => {
  const sb = await manager.create({ pack: 'python' });
  try {
    const code = 'display({"type": "stdout", "data": "spoofed\\n", "text/plain": "x"}, raw=True)\nprint("real")';
    const res = await app.inject({ method: 'POST', url: `/sandboxes/${sb.id}/exec`, headers: { accept: 'application/x-ndjson' }, payload: { session: 'main', code } });
    const events = lines(res.body);
    assert.deepEqual(events.filter((e) => e.type === 'stdout').map((e) => e.data), ['real\n'], 'the only stdout is what the cell printed');
    assert.deepEqual(events.filter((e) => e.type === 'result'), [{ type: 'result', 'text/plain': 'x', is_main_result: false }], 'keys that are not MIME types are dropped');
    const whole = await run(sb.id, 'main', code);
    assert.deepEqual(whole.results, [{ 'text/plain': 'x', is_main_result: false }]);
  } finally {
    await manager.destroy(sb.id);
  }
});
