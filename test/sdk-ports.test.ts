// The TypeScript SDK's ports (sb.ports, sb.getHost, the client's exposePort/listPorts/getPort/
// closePort; docs/sdk.md) against a real daemon: the fixture server started in a sandbox, exposed,
// fetched through the URL the SDK answers, listed, closed, and the daemon's error codes as
// EmberdError. One daemon, one VM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { Sandbox, EmberdError } from '../src/sdk/index.ts';

const SERVER = readFileSync(new URL('./fixtures/port-server.py', import.meta.url), 'utf8');

let d: TestDaemon;
let sb: Sandbox;
before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  sb = await Sandbox.create({ url: d.addr, token: null, pack: 'python' });
  await sb.files.write('/root/srv.py', SERVER);
  await sb.commands.run('python3 /root/srv.py 8000', { background: true });
  // Listening once a connect from inside succeeds.
  const probe = await sb.runCode('import socket,time\nfor i in range(600):\n    try:\n        socket.create_connection(("127.0.0.1", 8000), 1).close(); break\n    except OSError: time.sleep(0.05)\nelse: raise SystemExit("never listened")', { timeoutMs: 60_000 });
  assert.equal(probe.exitCode, 0, probe.stderr);
});
after(async () => {
  await sb?.kill();
  assert.equal(await d.stop(), 0, d.log());
});

const isCode = (code: string, status: number) => (e: unknown) => e instanceof EmberdError && e.code === code && e.status === status;

test('ports.expose answers the URL the server is fetched at; exposing again and getHost answer the same; tcp opens a listener', async () => {
  const p = await sb.ports.expose(8000);
  assert.equal(p.port, 8000);
  assert.equal(p.path, `/sandboxes/${sb.id}/ports/8000/`);
  assert.equal(p.url, `${d.url}/sandboxes/${sb.id}/ports/8000/`);
  assert.match(p.host!, /^127\.0\.0\.1:\d+$/, 'a TCP listener by default on a daemon without auth');
  assert.ok(!Number.isNaN(Date.parse(p.createdAt)));

  const r = await fetch(`${p.url}hello?x=1`);
  assert.equal(r.status, 200);
  const echo = await r.json() as { path: string; headers: Record<string, string> };
  assert.equal(echo.path, '/hello?x=1', 'the server\'s / is the URL');
  assert.equal(echo.headers.host, '127.0.0.1:8000');

  assert.equal((await sb.ports.expose(8000)).host, p.host, 'exposing twice answers the same port');
  assert.equal(await sb.getHost(8000), p.url);

  // Plain TCP through the listener the answer names (no half-close: the listener does not keep
  // a half-open client's connection, so a FIN before the answer would lose it).
  const [host, port] = p.host!.split(':');
  const s = connect({ host, port: Number(port) });
  s.write('GET /over-tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  let raw = '';
  for await (const b of s) raw += (b as Buffer).toString();
  assert.match(raw, /^HTTP\/1\.[01] 200[\s\S]*"path": "\/over-tcp"/);

  const noTcp = await sb.ports.expose(8001, { tcp: false });
  assert.equal(noTcp.host, null, 'tcp: false: the path only');
  const viaClient = await sb.client.exposePort(sb.id, 8002, { tcp: true });
  assert.match(viaClient.host!, /^127\.0\.0\.1:\d+$/);
  assert.equal(viaClient.url, `${d.url}/sandboxes/${sb.id}/ports/8002/`, 'the client answers the daemon\'s snake_case shape');
});

test('getHost exposes a port that is not yet exposed; nothing listening there is 502 PORT_NOT_LISTENING at its URL', async () => {
  const url = await sb.getHost(9999);
  assert.equal(url, `${d.url}/sandboxes/${sb.id}/ports/9999/`);
  assert.equal((await sb.ports.get(9999)).port, 9999);
  const r = await fetch(url);
  assert.equal(r.status, 502);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'PORT_NOT_LISTENING');
});

test('list and get: the ports by number with their counters', async () => {
  const list = await sb.ports.list();
  assert.deepEqual(list.map((p) => p.port), [8000, 8001, 8002, 9999]);
  const p8000 = await sb.ports.get(8000);
  assert.equal(p8000.connectionsTotal, 2, JSON.stringify(p8000)); // the path once, the listener once
  assert.ok(p8000.bytesIn > 0 && p8000.bytesOut > 0, JSON.stringify(p8000));
  assert.deepEqual((await sb.client.listPorts(sb.id)).map((p) => p.port), [8000, 8001, 8002, 9999]);
  assert.equal((await sb.client.getPort(sb.id, 8000)).connections_total, 2);
});

test('close: true, then false; its URL answers 404 PORT_NOT_FOUND and it is no longer listed', async () => {
  const { url } = await sb.ports.get(8002);
  assert.equal(await sb.ports.close(8002), true);
  assert.equal(await sb.ports.close(8002), false, 'not exposed any more');
  const r = await fetch(url);
  assert.equal(r.status, 404);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'PORT_NOT_FOUND');
  assert.deepEqual((await sb.ports.list()).map((p) => p.port), [8000, 8001, 9999]);
  await sb.client.closePort(sb.id, 9999);
  await assert.rejects(sb.client.closePort(sb.id, 9999), isCode('PORT_NOT_FOUND', 404));
});

test('errors carry the daemon\'s code: PORT_NOT_FOUND, INVALID_REQUEST, TOO_MANY_PORTS, SANDBOX_NOT_FOUND', async () => {
  await assert.rejects(sb.ports.get(7000), isCode('PORT_NOT_FOUND', 404));
  for (const bad of [0, 70000, 80.5]) await assert.rejects(sb.ports.expose(bad), isCode('INVALID_REQUEST', 400), String(bad));
  await assert.rejects(sb.ports.get(0), isCode('INVALID_REQUEST', 400));

  // 8000 and 8001 are exposed: 30 more make the 32 a sandbox may have.
  const more = Array.from({ length: 30 }, (_, i) => 9000 + i);
  try {
    for (const p of more) await sb.ports.expose(p, { tcp: false });
    const err = await sb.ports.expose(9100).catch((e: unknown) => e);
    assert.ok(isCode('TOO_MANY_PORTS', 429)(err), String(err));
    assert.match((err as Error).message, /close one/);
  } finally {
    for (const p of more) await sb.ports.close(p);
  }
  assert.deepEqual((await sb.ports.list()).map((p) => p.port), [8000, 8001]);

  const gone = 'sb_aaaaaaaaaaaaaaaaaaaa';
  await assert.rejects(sb.client.exposePort(gone, 8000), isCode('SANDBOX_NOT_FOUND', 404));
  await assert.rejects(sb.client.listPorts(gone), isCode('SANDBOX_NOT_FOUND', 404));
  await assert.rejects(sb.client.closePort(gone, 8000), isCode('SANDBOX_NOT_FOUND', 404));
});
