// Sessions wired into the manager and the HTTP layer, with the real guest agent running on the host
// (no VMM) and this host's python3 as the interpreter: runInSession, the session routes, the
// error codes, and teardown with the sandbox. The VM behaviour is test/sessions.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxManager } from './manager.ts';
import { runInSession } from './sessions.ts';
import { buildHttpServer } from '../daemon/http/server.ts';
import type { DaemonInfo } from '../daemon/http/info.ts';
import { HostAgentBackend } from '../../test/helpers/host-agent-backend.ts';
import { isEmberdError } from '../errors.ts';

const base = mkdtempSync('/tmp/emb-sess-');
const kernel = join(base, 'vmlinux');
writeFileSync(kernel, '');
const manager = new SandboxManager({
  backend: new HostAgentBackend(),
  kernel,
  initramfs: kernel,
  packs: new Map([['shell', { name: 'shell', image: kernel }], ['python', { name: 'python', image: kernel }]]),
  defaultPack: 'python',
  machine: { vcpus: 1, memoryMib: 64 },
  runBase: join(base, 'run'),
  bootTimeoutMs: 10_000,
  maxSandboxes: 4,
  exec: { defaultTimeoutMs: 10_000, maxTimeoutMs: 60_000, outputCap: 1 << 20 },
});
const app = buildHttpServer(manager, { bodyLimit: 1 << 20, info: () => ({}) as DaemonInfo });
after(async () => {
  await app.close();
  await manager.shutdown();
  rmSync(base, { recursive: true, force: true });
});

const opts = { timeoutMs: 10_000, outputCap: 1 << 20 };

/** Session interpreters (of any sandbox of this test) still running on the host. */
function sessionProcesses(): number {
  let n = 0;
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`).includes('<emberd-session>') && readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]![0] !== 'Z') n++;
    } catch { /* gone meanwhile */ }
  }
  return n;
}

test('runInSession keeps state; the routes list and delete; destroy ends the interpreters', async () => {
  const sb = await manager.create('python');
  const a = await runInSession(sb, 'main', 'x = 6*7\nx', opts);
  assert.deepEqual({ value: a.value, exitCode: a.exitCode, sessionReset: a.sessionReset }, { value: '42', exitCode: 0, sessionReset: false });
  assert.equal((await runInSession(sb, 'main', 'x + 1', opts)).value, '43');
  await runInSession(sb, 'other', 'pass', opts);

  const list = await app.inject({ method: 'GET', url: `/sandboxes/${sb.id}/sessions` });
  assert.equal(list.statusCode, 200);
  const sessions = list.json().sessions as { name: string; created_at: string; last_used_at: string; execs: number }[];
  assert.deepEqual(sessions.map((s) => [s.name, s.execs]).sort(), [['main', 2], ['other', 1]]);
  assert.ok(sessions.every((s) => !Number.isNaN(Date.parse(s.created_at)) && s.last_used_at >= s.created_at));

  assert.equal((await app.inject({ method: 'DELETE', url: `/sandboxes/${sb.id}/sessions/other` })).statusCode, 204);
  const again = await app.inject({ method: 'DELETE', url: `/sandboxes/${sb.id}/sessions/other` });
  assert.equal(again.statusCode, 404);
  assert.equal(again.json().error.code, 'SESSION_NOT_FOUND');
  assert.equal((await app.inject({ method: 'DELETE', url: `/sandboxes/${sb.id}/sessions/bad%20name` })).json().error.code, 'INVALID_REQUEST');
  assert.equal((await app.inject({ method: 'GET', url: '/sandboxes/sb_00000000000000000000/sessions' })).statusCode, 404);
  assert.equal(sessionProcesses(), 1);

  await manager.destroy(sb.id);
  await assert.rejects(runInSession(sb, 'main', 'x', opts), (e) => isEmberdError(e, 'SANDBOX_NOT_READY'));
  const deadline = Date.now() + 5000;
  while (sessionProcesses() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(sessionProcesses(), 0, 'a session interpreter outlived its sandbox');
});

test('a sandbox of a pack without sessions answers SESSIONS_UNSUPPORTED (400)', async () => {
  const sb = await manager.create('shell');
  try {
    await assert.rejects(runInSession(sb, 'main', '1', opts), (e) => isEmberdError(e, 'SESSIONS_UNSUPPORTED') && e.status === 400);
    const r = await app.inject({ method: 'GET', url: `/sandboxes/${sb.id}/sessions` });
    assert.equal(r.statusCode, 400);
    assert.equal(r.json().error.code, 'SESSIONS_UNSUPPORTED');
  } finally {
    await manager.destroy(sb.id);
  }
});

test('the session limit, and a timeout that needs the kill, through runInSession', async () => {
  const sb = await manager.create('python');
  try {
    const r = await runInSession(sb, 's', 'import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass', { ...opts, timeoutMs: 200 });
    assert.deepEqual({ timedOut: r.timedOut, sessionReset: r.sessionReset, exitCode: r.exitCode }, { timedOut: true, sessionReset: true, exitCode: 137 });
    await Promise.all(Array.from({ length: 16 }, (_, i) => runInSession(sb, `n${i}`, 'pass', opts)));
    await assert.rejects(runInSession(sb, 'one-too-many', 'pass', opts), (e) => isEmberdError(e, 'TOO_MANY_SESSIONS') && e.status === 429);
  } finally {
    await manager.destroy(sb.id);
  }
});
