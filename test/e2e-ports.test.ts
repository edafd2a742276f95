// Exposed ports end to end on real VMs (docs/network.md "Ports"): python's http.server started in
// a sandbox with no network device, fetched from the host through the daemon's path and through
// the 127.0.0.1 TCP listener, a WebSocket echo through the path (Node's own WebSocket client), big
// bodies both ways, the errors, counters, closing, a pause in between, and the daemon's auth on
// the path. Only loopback is ever touched: the guest's server binds 127.0.0.1 inside the VM.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { get as httpGet } from 'node:http';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';

const SERVER = readFileSync(new URL('./fixtures/port-server.py', import.meta.url));

const post = (d: TestDaemon, path: string, body?: unknown, headers: Record<string, string> = {}) =>
  http(d, 'POST', path, body === undefined ? undefined : JSON.stringify(body), headers);

/** A python sandbox running the fixture server on each of `ports` (127.0.0.1 in the guest). */
async function sandboxWithServers(d: TestDaemon, ports: number[], auth: Record<string, string> = {}): Promise<string> {
  const sb = await post(d, '/sandboxes', { language_pack: 'python' }, auth);
  assert.equal(sb.status, 201, sb.text);
  const id = sb.json.id as string;
  const put = await http(d, 'PUT', `/sandboxes/${id}/files?path=/root/srv.py`, SERVER, auth);
  assert.equal(put.status, 201, put.text);
  for (const p of ports) {
    const bg = await post(d, `/sandboxes/${id}/exec`, { argv: ['python3', '/root/srv.py', String(p)], background: true }, auth);
    assert.equal(bg.status, 202, bg.text);
  }
  // Listening once a connect from inside succeeds.
  const probe = `import socket,time\nfor p in ${JSON.stringify(ports)}:\n    for i in range(300):\n        try:\n            socket.create_connection(('127.0.0.1', p), 1).close(); break\n        except OSError: time.sleep(0.05)\n    else: raise SystemExit('port %d never listened' % p)`;
  const r = await post(d, `/sandboxes/${id}/exec`, { code: probe, timeout_ms: 60_000 }, auth);
  assert.equal(r.json?.exit_code, 0, r.text);
  return id;
}

/** One HTTP/1.1 GET on a raw TCP connection to host:port: the whole answer as text, or the socket's error code. */
async function rawGet(hostPort: string, path: string, o: { halfClose?: boolean } = {}): Promise<string> {
  const [host, port] = hostPort.split(':');
  const s = connect({ host, port: Number(port), allowHalfOpen: true });
  s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  if (o.halfClose) s.end(); // done sending; still reading
  s.on('end', () => s.end()); // the answer is whole: close our side too
  const parts: Buffer[] = [];
  let error = '';
  s.on('data', (b: Buffer) => parts.push(b));
  s.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message; });
  await new Promise((r) => s.once('close', r));
  return error || Buffer.concat(parts).toString();
}

describe('ports without auth', () => {
  let d: TestDaemon;
  let id: string;
  before(async () => {
    d = await startDaemon(['--pool-size', '0']);
    id = await sandboxWithServers(d, [8000, 8001]);
  });
  after(async () => { await d?.stop(); });

  test('a sandbox without network has no device, yet its http.server is reachable through the daemon path', async () => {
    const links = await post(d, `/sandboxes/${id}/exec`, { argv: ['ls', '/sys/class/net'] });
    assert.equal(links.json.stdout.trim(), 'lo');
    const exposed = await post(d, `/sandboxes/${id}/ports`, { port: 8000 });
    assert.equal(exposed.status, 201, exposed.text);
    assert.equal(exposed.json.path, `/sandboxes/${id}/ports/8000/`);
    assert.equal(exposed.json.url, `${d.url}/sandboxes/${id}/ports/8000/`);
    assert.match(exposed.json.host, /^127\.0\.0\.1:\d+$/, 'a TCP listener by default without auth');
    const again = await post(d, `/sandboxes/${id}/ports`, { port: 8000 });
    assert.equal(again.status, 200, 'exposing twice answers the same port');
    assert.equal(again.json.host, exposed.json.host);

    // node:http, not fetch: fetch will not send a Connection header naming another one.
    const echo = await new Promise<{ path: string; headers: Record<string, string> }>((resolve, reject) => {
      httpGet(`${exposed.json.url}some/where?x=1&y=%20`, { headers: { 'x-custom': 'yes', connection: 'keep-alive, x-hop', 'x-hop': 'dropped' } }, (res) => {
        assert.equal(res.statusCode, 200);
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.on('end', () => resolve(JSON.parse(Buffer.concat(parts).toString())));
      }).on('error', reject);
    });
    assert.equal(echo.path, '/some/where?x=1&y=%20', 'the rest of the path and the query reach the server');
    assert.equal(echo.headers['x-custom'], 'yes');
    assert.equal(echo.headers.host, '127.0.0.1:8000');
    assert.equal(echo.headers['x-forwarded-prefix'], `/sandboxes/${id}/ports/8000`);
    assert.equal(echo.headers['x-forwarded-host'], d.addr);
    assert.equal(echo.headers['x-hop'], undefined, 'headers named in Connection are hop-by-hop');
  });

  test('big bodies both ways through the path: 4 MiB up (hashed by the server) and 4 MiB down', async () => {
    const up = randomBytes(4 << 20);
    const r = await fetch(`${d.url}/sandboxes/${id}/ports/8000/upload`, { method: 'POST', body: up, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(r.status, 200);
    const got = await r.json() as { len: number; sha256: string };
    assert.equal(got.len, up.length);
    assert.equal(got.sha256, createHash('sha256').update(up).digest('hex'));
    const down = await fetch(`${d.url}/sandboxes/${id}/ports/8000/bytes?n=${4 << 20}`);
    assert.equal(down.status, 200);
    assert.equal((await down.arrayBuffer()).byteLength, 4 << 20);
  });

  test('plain TCP through the 127.0.0.1 listener', async () => {
    const { json } = await http(d, 'GET', `/sandboxes/${id}/ports/8000`);
    const answer = await rawGet(json.host, '/over-tcp');
    assert.match(answer, /^HTTP\/1\.[01] 200/);
    assert.match(answer, /"path": "\/over-tcp"/);
  });

  test('regression: a TCP client that half-closes after its request still gets the answer', async () => {
    const { json } = await http(d, 'GET', `/sandboxes/${id}/ports/8000`);
    const answer = await rawGet(json.host, '/half-closed', { halfClose: true });
    assert.match(answer, /^HTTP\/1\.[01] 200/);
    assert.match(answer, /"path": "\/half-closed"/);
  });

  test('a WebSocket echo through the path: text and a 100 KB binary message', async () => {
    assert.equal((await post(d, `/sandboxes/${id}/ports`, { port: 8001 })).status, 201);
    const ws = new WebSocket(`ws://${d.addr}/sandboxes/${id}/ports/8001/echo`);
    ws.binaryType = 'arraybuffer';
    const got: (string | number)[] = [];
    const done = new Promise<void>((resolve, reject) => {
      ws.onerror = () => reject(new Error('websocket error'));
      ws.onmessage = (m) => {
        got.push(typeof m.data === 'string' ? m.data : (m.data as ArrayBuffer).byteLength);
        if (got.length === 2) resolve();
      };
    });
    await new Promise<void>((resolve, reject) => { ws.onopen = () => resolve(); ws.onclose = () => reject(new Error('closed before open')); });
    ws.send('hello through the control channel');
    ws.send(new Uint8Array(100_000).fill(5));
    await done;
    assert.deepEqual(got, ['hello through the control channel', 100_000]);
    const closed = new Promise<number>((r) => { ws.onclose = (e) => r(e.code); });
    ws.close(1000);
    await closed;
  });

  test('a port by host name (8000-ID.localhost, as E2B\'s getHost builds it) with curl: exposed on first use, at the host\'s root', async () => {
    const port = d.addr.split(':')[1];
    const run = promisify(execFile);
    // curl resolves every *.localhost name to loopback itself; nothing else is asked.
    const { stdout } = await run('curl', ['-sS', '--max-time', '30', `http://8001-${id}.localhost:${port}/at/root?q=1`]);
    const echo = JSON.parse(stdout) as { path: string; headers: Record<string, string> };
    assert.equal(echo.path, '/at/root?q=1');
    assert.equal(echo.headers['x-forwarded-prefix'], undefined, 'no prefix: the app has the host\'s root');
    assert.equal(echo.headers['x-forwarded-host'], `8001-${id}.localhost:${port}`);
    assert.equal((await http(d, 'GET', `/sandboxes/${id}/ports/8001`)).status, 200, 'exposed by that first request');
    // Other names of that shape are not taken (a page on a name someone else owns must not reach a sandbox).
    const other = await run('curl', ['-sS', '--max-time', '30', '--resolve', `8001-${id}.example.test:${port}:127.0.0.1`, `http://8001-${id}.example.test:${port}/`]);
    // Not the port: without auth, a name that is not loopback is not served at all.
    assert.equal(JSON.parse(other.stdout).error?.code, 'HOST_NOT_ALLOWED', other.stdout.slice(0, 200));
  });

  test('errors: nothing listening (502 PORT_NOT_LISTENING), a port not exposed (404), a bad port (400), no such sandbox (404)', async () => {
    assert.equal((await post(d, `/sandboxes/${id}/ports`, { port: 9999 })).status, 201);
    const refused = await http(d, 'GET', `/sandboxes/${id}/ports/9999/`);
    assert.equal(refused.status, 502, refused.text);
    assert.equal(refused.json.error.code, 'PORT_NOT_LISTENING');
    const notExposed = await http(d, 'GET', `/sandboxes/${id}/ports/7000/x`);
    assert.equal(notExposed.status, 404);
    assert.equal(notExposed.json.error.code, 'PORT_NOT_FOUND');
    for (const body of [{ port: 0 }, { port: 70000 }, { port: '80' }, {}, { port: 80, extra: 1 }]) {
      const r = await post(d, `/sandboxes/${id}/ports`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.json.error.code, 'INVALID_REQUEST');
    }
    const badPath = await http(d, 'GET', `/sandboxes/${id}/ports/http/`);
    assert.equal(badPath.status, 400);
    const gone = await http(d, 'GET', '/sandboxes/sb_doesnotexist/ports/8000/');
    assert.equal(gone.status, 404);
    assert.equal(gone.json.error.code, 'SANDBOX_NOT_FOUND');
    // The TCP listener of a port with nothing behind it accepts, then resets.
    const { json } = await http(d, 'GET', `/sandboxes/${id}/ports/9999`);
    assert.equal(await rawGet(json.host, '/'), 'ECONNRESET');
  });

  test('the list and the counters; DELETE closes the path and the listener', async () => {
    const list = await http(d, 'GET', `/sandboxes/${id}/ports`);
    assert.equal(list.status, 200);
    assert.deepEqual(list.json.ports.map((p: { port: number }) => p.port), [8000, 8001, 9999]);
    const p8000 = list.json.ports[0];
    assert.equal(p8000.connections_total, 5, JSON.stringify(p8000)); // the path 3 times, the listener twice
    assert.ok(p8000.bytes_in >= 4 << 20 && p8000.bytes_out >= 4 << 20, JSON.stringify(p8000));
    assert.equal((await http(d, 'DELETE', `/sandboxes/${id}/ports/8000`)).status, 204);
    assert.equal((await http(d, 'GET', `/sandboxes/${id}/ports/8000/`)).json.error.code, 'PORT_NOT_FOUND');
    const [host, port] = p8000.host.split(':');
    const s = connect({ host, port: Number(port) });
    const [err] = await once(s, 'error') as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
    assert.equal((await http(d, 'DELETE', `/sandboxes/${id}/ports/8000`)).status, 404);
  });

  test('a pause ends open connections but keeps the port: the next request resumes the sandbox, whose server still runs', async () => {
    const exposed = await post(d, `/sandboxes/${id}/ports`, { port: 8000 });
    assert.equal(exposed.status, 201);
    const ws = new WebSocket(`ws://${d.addr}/sandboxes/${id}/ports/8001/echo`);
    await new Promise<void>((resolve, reject) => { ws.onopen = () => resolve(); ws.onerror = () => reject(new Error('websocket error')); });
    const wsClosed = new Promise<void>((r) => { ws.onclose = () => r(); });
    const paused = await post(d, `/sandboxes/${id}/pause`);
    assert.equal(paused.status, 200, paused.text);
    assert.equal(paused.json.state, 'paused');
    await wsClosed; // an open connection does not survive the pause
    assert.equal((await http(d, 'GET', `/sandboxes/${id}/ports/8001`)).json.connections, 0);
    const r = await fetch(`${exposed.json.url}after-pause`);
    assert.equal(r.status, 200);
    assert.equal(((await r.json()) as { path: string }).path, '/after-pause');
    assert.equal((await http(d, 'GET', `/sandboxes/${id}`)).json.state, 'ready');
  });

  test('the ports end with the sandbox: its listeners close', async () => {
    const { json } = await http(d, 'GET', `/sandboxes/${id}/ports/8000`);
    assert.equal((await http(d, 'DELETE', `/sandboxes/${id}`)).status, 204);
    const [host, port] = json.host.split(':');
    await eventually(async () => {
      const s = connect({ host, port: Number(port) });
      const r = await Promise.race([once(s, 'error').then(([e]) => (e as NodeJS.ErrnoException).code), once(s, 'connect').then(() => 'connected')]);
      s.destroy();
      return r === 'ECONNREFUSED';
    }, 10_000, 'the listener closed');
  });
});

describe('ports with auth on', () => {
  let d: TestDaemon;
  let id: string;
  let auth: Record<string, string>;
  before(async () => {
    d = await startDaemon(['--auth', 'on', '--pool-size', '0']);
    auth = { authorization: `Bearer ${d.token}` };
    id = await sandboxWithServers(d, [8000], auth);
  });
  after(async () => { await d?.stop(); });

  test('the path needs the token, which never reaches the sandbox; no TCP listener unless asked', async () => {
    const exposed = await post(d, `/sandboxes/${id}/ports`, { port: 8000 }, auth);
    assert.equal(exposed.status, 201, exposed.text);
    assert.equal(exposed.json.host, null, 'a TCP listener checks no token: off by default with auth');
    const anon = await http(d, 'GET', `/sandboxes/${id}/ports/8000/`);
    assert.equal(anon.status, 401);
    assert.equal(anon.json.error.code, 'UNAUTHORIZED');
    const wsAnon = new WebSocket(`ws://${d.addr}/sandboxes/${id}/ports/8000/echo`);
    const refused = await new Promise<string>((r) => { wsAnon.onopen = () => r('open'); wsAnon.onerror = () => r('refused'); });
    assert.equal(refused, 'refused', 'a WebSocket without the token is refused before the upgrade');
    // With the token (the ws package: Node's WebSocket sends no custom headers), the echo answers.
    const { default: WsClient } = await import('ws');
    const ws = new WsClient(`ws://${d.addr}/sandboxes/${id}/ports/8000/echo`, { headers: auth });
    await once(ws, 'open');
    ws.send('with the token');
    const [msg] = await once(ws, 'message') as [Buffer];
    assert.equal(msg.toString(), 'with the token');
    ws.close();
    await once(ws, 'close');
    const r = await http(d, 'GET', `/sandboxes/${id}/ports/8000/who`, undefined, auth);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.path, '/who');
    assert.equal(r.json.headers.authorization, undefined, 'the daemon\'s token is not passed on');
    const withTcp = await post(d, `/sandboxes/${id}/ports`, { port: 8000, tcp: true }, auth);
    assert.equal(withTcp.status, 200);
    assert.match(withTcp.json.host, /^127\.0\.0\.1:\d+$/);
  });
});
