// emberd's MCP server over Streamable HTTP at /mcp on a real daemon with real VMs, driven by the
// official MCP client in both protocol eras (2025 stateless and 2026-07-28), and the endpoint's
// DNS-rebinding checks on Host and Origin. One daemon, no warm pool or snapshots: each era's tool
// session boots its own sandboxes and destroys them; nothing may be left running.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { fetch as plainFetch } from 'undici';
import { Client, StreamableHTTPClientTransport, type FetchLike } from '@modelcontextprotocol/client';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { checkServer, toolSession, vmsUnder } from './helpers/mcp-tool-session.ts';

let d: TestDaemon;

before(async () => {
  process.env.EMBERD_MCP_ALLOWED_HOSTS = 'mcp.test'; // inherited by the daemon only
  try {
    d = await startDaemon(['--snapshots', 'off', '--pool-size', '0']);
  } finally {
    delete process.env.EMBERD_MCP_ALLOWED_HOSTS;
  }
});
after(async () => {
  const runDir = d.runDir;
  assert.deepEqual(await d.client.listSandboxes(), [], 'no sandbox left');
  assert.equal(await d.stop(), 0, d.log());
  assert.deepEqual(vmsUnder(runDir), [], 'no VM of this daemon left');
});

async function connect(era: 'legacy' | 'auto'): Promise<Client> {
  const c = new Client({ name: 'emberd-test', version: '1.0.0' }, { versionNegotiation: { mode: era } });
  // Undici's own fetch, not the test's global one that checks answers against /openapi.json: the
  // test daemon checks every answer it gives itself (its preload), MCP's included, so a mismatch
  // fails stop() with the route named instead of breaking the MCP transport mid-exchange.
  await c.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { fetch: plainFetch as unknown as FetchLike }));
  return c;
}

for (const era of ['legacy', 'auto'] as const) {
  test(`Streamable HTTP, ${era === 'auto' ? '2026-07-28 (negotiated with mode auto)' : 'the 2025 revision (the client\'s default)'}: a whole tool session`, async () => {
    const c = await connect(era);
    try {
      await checkServer(c, era);
      await toolSession(c);
    } finally {
      await c.close();
    }
  });
}

/** A raw POST with exactly these headers (fetch cannot set Host). */
function post(headers: Record<string, string>): Promise<{ status: number; body: string }> {
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
  const [host, port] = d.addr.split(':');
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path: '/mcp', method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'content-length': Buffer.byteLength(body), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('DNS rebinding: a Host or Origin that is not loopback (or configured) is refused with 403, before any tool runs', async () => {
  const port = d.addr.split(':')[1];
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `mcp.test:${port}`]) {
    const r = await post({ host });
    assert.equal(r.status, 200, `${host}: ${r.body}`);
    assert.match(r.body, /"serverInfo":\{"name":"emberd"/);
  }
  for (const host of [`evil.example:${port}`, `127.0.0.1.nip.io:${port}`, `mcp.test.evil.example:${port}`]) {
    const r = await post({ host });
    assert.equal(r.status, 403, host);
    const j = JSON.parse(r.body);
    assert.equal(j.jsonrpc, '2.0');
    assert.match(j.error.message, /Host header .* refused \(DNS rebinding protection\).*EMBERD_MCP_ALLOWED_HOSTS/);
  }
  for (const origin of ['http://evil.example', `http://evil.example:${port}`, 'null']) {
    const r = await post({ host: `127.0.0.1:${port}`, origin });
    assert.equal(r.status, 403, origin);
    assert.match(JSON.parse(r.body).error.message, /Origin .* refused/);
  }
  for (const origin of [`http://localhost:${port}`, 'http://127.0.0.1', 'https://mcp.test']) {
    assert.equal((await post({ host: `127.0.0.1:${port}`, origin })).status, 200, origin);
  }
});

test('the 2025 session operations (GET, DELETE) answer 405 on the stateless endpoint; other paths stay the API\'s', async () => {
  for (const method of ['GET', 'DELETE']) {
    const r = await fetch(`${d.url}/mcp`, { method, headers: { accept: 'text/event-stream' } });
    assert.equal(r.status, 405, method);
    await r.body?.cancel();
  }
  const nf = await fetch(`${d.url}/mcp/x`, { method: 'POST' });
  assert.equal(nf.status, 404);
  assert.equal(((await nf.json()) as { error: { code: string } }).error.code, 'ROUTE_NOT_FOUND');
});
