// emberctl's port commands against a real daemon: expose (the URL on stdout, --tcp / --no-tcp),
// ports (the table and --json), unexpose, and the daemon's errors as exit 1 with the code. The
// fixture server runs in one sandbox; one daemon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';

const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const SERVER = readFileSync(new URL('./fixtures/port-server.py', import.meta.url), 'utf8');
let d: TestDaemon;
let id: string;

before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  id = (await d.client.createSandbox({ language_pack: 'python' })).id;
  await d.client.uploadFile(id, '/root/srv.py', SERVER);
  await d.client.startProcess(id, { argv: ['python3', '/root/srv.py', '8000'] });
  const probe = await d.client.exec(id, { code: 'import socket,time\nfor i in range(600):\n    try:\n        socket.create_connection(("127.0.0.1", 8000), 1).close(); break\n    except OSError: time.sleep(0.05)\nelse: raise SystemExit("never listened")', timeout_ms: 60_000 });
  assert.equal(probe.exit_code, 0, probe.stderr);
});
after(async () => {
  await d.client.deleteSandbox(id).catch(() => {});
  assert.equal(await d.stop(), 0, d.log());
});

function ctl(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, EMBERD_ADDR: d.addr }, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('expose prints the URL (the TCP listener on stderr), which serves the sandbox\'s server; again, the same', async () => {
  const e = ctl(['expose', id, '8000']);
  assert.equal(e.code, 0, e.err);
  assert.equal(e.out, `${d.url}/sandboxes/${id}/ports/8000/\n`, 'only the URL on stdout: $(emberctl expose ...) is usable');
  assert.match(e.err, /^emberctl: plain TCP at 127\.0\.0\.1:\d+\n$/);
  const echo = await (await fetch(`${e.out.trim()}via/cli`)).json() as { path: string };
  assert.equal(echo.path, '/via/cli');
  assert.equal(ctl(['expose', id, '8000']).out, e.out, 'exposing again answers the same URL');

  const noTcp = ctl(['expose', '--no-tcp', id, '8001']);
  assert.deepEqual([noTcp.code, noTcp.err], [0, ''], 'no listener, nothing on stderr');
  const j = JSON.parse(ctl(['--json', 'expose', '--tcp', id, '8002']).out);
  assert.equal(j.port, 8002);
  assert.match(j.host, /^127\.0\.0\.1:\d+$/);
});

test('ports: a table of the exposed ports, --json the daemon\'s list', () => {
  const t = ctl(['ports', id]);
  assert.equal(t.code, 0, t.err);
  const lines = t.out.trimEnd().split('\n');
  assert.match(lines[0]!, /^PORT\s+TCP\s+OPEN\s+TOTAL\s+IN\s+OUT\s+URL$/);
  assert.deepEqual(lines.slice(1).map((l) => l.split(/\s+/)[0]), ['8000', '8001', '8002']);
  assert.match(lines[1]!, new RegExp(`^8000\\s+127\\.0\\.0\\.1:\\d+\\s+\\d+\\s+1\\s+\\d+\\s+\\d+\\s+${d.url}/sandboxes/${id}/ports/8000/$`));
  assert.match(lines[2]!, /^8001\s+-\s/, 'no TCP listener');
  const j = JSON.parse(ctl(['--json', 'ports', id]).out);
  assert.deepEqual(j.map((p: { port: number }) => p.port), [8000, 8001, 8002]);
  assert.equal(j[0].connections_total, 1);
});

test('unexpose closes it (its URL then answers PORT_NOT_FOUND); errors exit 1 with the daemon\'s code', async () => {
  for (const p of ['8001', '8002']) {
    const u = ctl(['unexpose', id, p]);
    assert.deepEqual([u.code, u.out], [0, `closed port ${p} of ${id}\n`], u.err);
  }
  const r = await fetch(`${d.url}/sandboxes/${id}/ports/8001/`);
  assert.equal(r.status, 404);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'PORT_NOT_FOUND');
  assert.deepEqual(JSON.parse(ctl(['--json', 'unexpose', id, '8000']).out), { port: 8000, closed: true });
  assert.equal(ctl(['ports', id]).out, 'no exposed ports\n');

  const again = ctl(['unexpose', id, '8000']);
  assert.equal(again.code, 1);
  assert.match(again.err, /^emberctl: PORT_NOT_FOUND: .*expose it first/);
  const bad = ctl(['expose', id, '70000']);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /INVALID_REQUEST/);
  const noNumber = ctl(['unexpose', id, 'http']);
  assert.equal(noNumber.code, 1);
  assert.match(noNumber.err, /INVALID_REQUEST/);
  const gone = ctl(['ports', 'sb_aaaaaaaaaaaaaaaaaaaa']);
  assert.equal(gone.code, 1);
  assert.match(gone.err, /SANDBOX_NOT_FOUND/);
});
