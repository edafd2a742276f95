// DNS rebinding and cross-site requests against a daemon without auth (docs/security.md): a web
// page on another name that rebinds to 127.0.0.1, or that posts to 127.0.0.1 from the browser,
// must not drive the daemon. Loopback names and addresses, the daemon's own address, and local
// pages (an Origin on loopback) keep working; with auth on the token decides, as before.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';

let d: TestDaemon;
before(async () => { d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']); });
after(async () => { await d?.stop(); });

/** One request with the Host and Origin given (node:http: fetch will not set Host). */
function ask(method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; json: any }> {
  const [host, port] = d.addr.split(':');
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), method, path, headers: { 'content-type': 'text/plain', ...headers } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString();
        let json: any;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('a request naming another host (a DNS-rebinding page) is refused before anything runs: 403 HOST_NOT_ALLOWED', async () => {
  for (const host of ['evil.example:7777', 'evil.example', '8000-sb_x.evil.example', '10.0.0.1:7777']) {
    const r = await ask('POST', '/sandboxes', { host }, '{}');
    assert.equal(r.status, 403, host);
    assert.equal(r.json?.error?.code, 'HOST_NOT_ALLOWED', host);
  }
  const list = await ask('GET', '/sandboxes', { host: d.addr });
  assert.deepEqual(list.json.sandboxes, [], 'no sandbox was created');
});

test('a cross-site request (an Origin that is not loopback) is refused: 403 ORIGIN_NOT_ALLOWED', async () => {
  const r = await ask('POST', '/sandboxes', { host: d.addr, origin: 'https://evil.example' }, '{}');
  assert.equal(r.status, 403);
  assert.equal(r.json?.error?.code, 'ORIGIN_NOT_ALLOWED');
  const opaque = await ask('POST', '/sandboxes', { host: d.addr, origin: 'null' }, '{}');
  assert.equal(opaque.status, 403, 'an opaque origin (a sandboxed iframe, a file: page) is not loopback');
});

test('loopback names, the daemon\'s own address and local pages are served', async () => {
  const port = d.addr.split(':')[1];
  for (const host of [d.addr, `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, `app.localhost:${port}`, `my_app.localhost:${port}`, 'localhost']) {
    const r = await ask('GET', '/', { host });
    assert.equal(r.status, 200, host);
  }
  for (const origin of [`http://localhost:3000`, `http://127.0.0.1:${port}`, 'http://app.localhost:5173', 'http://[::1]:8080']) {
    const r = await ask('GET', '/', { host: d.addr, origin });
    assert.equal(r.status, 200, origin);
  }
});
