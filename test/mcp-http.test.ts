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
import { call, checkServer, ok, text, toolError, toolSession, vmsUnder } from './helpers/mcp-tool-session.ts';

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

test('pause_sandbox, resume_sandbox and fork_sandbox through the official client: not destructive (the annotations said so by default), state kept, resumed by a call, forks that diverge', async () => {
  const c = await connect('auto');
  const made: string[] = [];
  try {
    // Not destructive (MCP's default for a tool that is not read-only): hosts need not confirm them as they do destroy_sandbox.
    const hints = (await c.listTools()).tools.filter((t) => /^(pause|resume|fork)_sandbox$/.test(t.name)).map((t) => [t.name, t.annotations?.destructiveHint]);
    assert.deepEqual(hints.sort(), [['fork_sandbox', false], ['pause_sandbox', false], ['resume_sandbox', false]]);
    const id: string = ok(await call(c, 'create_sandbox', { language_pack: 'python', timeout_s: 600 }), 'create_sandbox').sandbox_id;
    made.push(id);
    ok(await call(c, 'run_code', { sandbox_id: id, session: 'main', code: 'x = 41' }), 'a session variable');

    const paused = await call(c, 'pause_sandbox', { sandbox_id: id });
    const p = ok(paused, 'pause_sandbox');
    assert.deepEqual([p.sandbox_id, p.sandbox.state], [id, 'paused']);
    assert.ok(p.sandbox.paused.bytes > 0, JSON.stringify(p.sandbox.paused));
    assert.match(text(paused), new RegExp(`^Paused sandbox ${id}: \\d+\\.\\d MiB on disk, paused in \\d+ ms; kept until `));
    assert.match(text(await call(c, 'list_sandboxes', {})), new RegExp(`${id} paused python .*paused, deleted `));
    // auto_resume (the default): the next call resumes it where it stopped
    assert.equal(ok(await call(c, 'run_code', { sandbox_id: id, session: 'main', code: 'x + 1' }), 'a call on a paused sandbox').value, '42');

    ok(await call(c, 'pause_sandbox', { sandbox_id: id }), 'pause again');
    const resumed = await call(c, 'resume_sandbox', { sandbox_id: id, timeout_s: 900 });
    const r = ok(resumed, 'resume_sandbox');
    assert.deepEqual([r.sandbox.state, r.sandbox.boot_mode, r.sandbox.timeout_s], ['ready', 'resume', 900]);
    assert.match(text(resumed), new RegExp(`^Sandbox ${id} is running; it is destroyed at `));
    ok(await call(c, 'resume_sandbox', { sandbox_id: id }), 'resume of a running sandbox');

    const forked = await call(c, 'fork_sandbox', { sandbox_id: id, count: 2 });
    const f = ok(forked, 'fork_sandbox');
    made.push(...f.sandbox_ids);
    assert.equal(f.sandbox_ids.length, 2);
    assert.deepEqual(f.sandboxes.map((s: { forked_from: string; boot_mode: string }) => [s.forked_from, s.boot_mode]), [[id, 'fork'], [id, 'fork']]);
    for (const k of f.sandbox_ids) assert.ok(text(forked).includes(`sandbox_id: ${k}`), text(forked));
    const [a, b] = f.sandbox_ids as string[];
    ok(await call(c, 'run_code', { sandbox_id: a, session: 'main', code: 'x = 1' }), 'a fork diverges');
    const values = await Promise.all([a, b, id].map(async (s) => ok(await call(c, 'run_code', { sandbox_id: s, session: 'main', code: 'x' }), 'x').value));
    assert.deepEqual(values, ['1', '41', '41']);
    const one = ok(await call(c, 'fork_sandbox', { sandbox_id: id }), 'fork_sandbox, count defaulted');
    made.push(...one.sandbox_ids);
    assert.equal(one.sandbox_ids.length, 1);

    toolError(await call(c, 'pause_sandbox', { sandbox_id: 'sb_doesnotexist000000' }), 'SANDBOX_NOT_FOUND');
    toolError(await call(c, 'resume_sandbox', { sandbox_id: 'sb_doesnotexist000000' }), 'SANDBOX_NOT_FOUND');
    toolError(await call(c, 'fork_sandbox', { sandbox_id: 'sb_doesnotexist000000' }), 'SANDBOX_NOT_FOUND');
  } finally {
    for (const s of made) ok(await call(c, 'destroy_sandbox', { sandbox_id: s }), 'destroy_sandbox');
    await c.close();
  }
});

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
