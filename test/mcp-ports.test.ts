// expose_port and create_sandbox's on_timeout/auto_resume through the official MCP client, over
// Streamable HTTP (/mcp) and stdio (`emberd mcp`), against a real daemon: the fixture server
// started in a sandbox with run_command (setsid, so it outlives the command), expose_port's url
// fetched from the host and answering the server's echo. One daemon, one VM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetch as plainFetch } from 'undici';
import { Client, StreamableHTTPClientTransport, type FetchLike } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { TOOL_NAMES, call, ok, text, toolError, vmsUnder } from './helpers/mcp-tool-session.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SERVER = readFileSync(new URL('./fixtures/port-server.py', import.meta.url), 'utf8');
let d: TestDaemon;
let c: Client;
let id: string;

before(async () => {
  d = await startDaemon(['--snapshots', 'off', '--pool-size', '0']);
  c = new Client({ name: 'emberd-test', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
  // Undici's own fetch, as in mcp-http.test.ts: the daemon checks its MCP answers itself.
  await c.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { fetch: plainFetch as unknown as FetchLike }));
});
after(async () => {
  await c?.close();
  const runDir = d.runDir;
  assert.deepEqual(await d.client.listSandboxes(), [], 'no sandbox left');
  assert.equal(await d.stop(), 0, d.log());
  assert.deepEqual(vmsUnder(runDir), [], 'no VM of this daemon left');
});

test('the tools: expose_port (not read-only, not destructive, idempotent, port 1-65535) and create_sandbox\'s on_timeout and auto_resume', async () => {
  const tools = (await c.listTools()).tools;
  assert.deepEqual(tools.map((t) => t.name).sort(), TOOL_NAMES);
  const expose = tools.find((t) => t.name === 'expose_port')!;
  assert.deepEqual([expose.annotations?.readOnlyHint, expose.annotations?.destructiveHint, expose.annotations?.idempotentHint], [false, false, true]);
  assert.deepEqual((expose.inputSchema.required as string[]).sort(), ['port', 'sandbox_id']);
  const create = tools.find((t) => t.name === 'create_sandbox')!.inputSchema.properties as Record<string, { enum?: string[]; type?: string }>;
  assert.deepEqual(create.on_timeout!.enum, ['destroy', 'pause']);
  assert.equal(create.auto_resume!.type, 'boolean');
});

test('create_sandbox with on_timeout pause and auto_resume false; a server started with run_command; expose_port answers a url that serves it, twice the same', async () => {
  const made = ok(await call(c, 'create_sandbox', { language_pack: 'python', timeout_s: 600, on_timeout: 'pause', auto_resume: false }), 'create_sandbox');
  id = made.sandbox_id;
  assert.deepEqual([made.sandbox.on_timeout, made.sandbox.auto_resume], ['pause', false]);

  ok(await call(c, 'write_file', { sandbox_id: id, path: '/root/srv.py', content: SERVER }), 'write_file');
  const bg = ok(await call(c, 'run_command', { sandbox_id: id, command: 'setsid python3 /root/srv.py 8000 </dev/null >/dev/null 2>&1 &' }), 'start the server');
  assert.equal(bg.exit_code, 0);
  const probe = ok(await call(c, 'run_code', { sandbox_id: id, timeout_ms: 60_000, code: 'import socket,time\nfor i in range(600):\n    try:\n        socket.create_connection(("127.0.0.1", 8000), 1).close(); break\n    except OSError: time.sleep(0.05)\nelse: raise SystemExit("never listened")' }), 'probe');
  assert.equal(probe.exit_code, 0, probe.stderr);

  const exposed = await call(c, 'expose_port', { sandbox_id: id, port: 8000 });
  const e = ok(exposed, 'expose_port');
  assert.equal(e.url, `${d.url}/sandboxes/${id}/ports/8000/`);
  assert.deepEqual([e.sandbox_id, e.port], [id, 8000]);
  assert.ok(text(exposed).includes(`url: ${e.url}`), text(exposed));
  const r = await fetch(`${e.url}through/mcp?x=1`);
  assert.equal(r.status, 200);
  const echo = await r.json() as { path: string; headers: Record<string, string> };
  assert.equal(echo.path, '/through/mcp?x=1');
  assert.equal(echo.headers.host, '127.0.0.1:8000');
  assert.equal(ok(await call(c, 'expose_port', { sandbox_id: id, port: 8000 }), 'expose_port again').url, e.url, 'idempotent');
});

test('expose_port through `emberd mcp` (stdio) answers the same url; errors are tool errors with the code', async () => {
  const transport = new StdioClientTransport({ command: join(ROOT, 'node_modules/.bin/node'), args: [join(ROOT, 'src/daemon/main.ts'), 'mcp'], env: { EMBERD_ADDR: d.addr }, stderr: 'pipe', cwd: '/' });
  const s = new Client({ name: 'emberd-test', version: '1.0.0' });
  await s.connect(transport);
  try {
    const e = ok(await call(s, 'expose_port', { sandbox_id: id, port: 8000 }), 'expose_port over stdio');
    assert.equal(e.url, `${d.url}/sandboxes/${id}/ports/8000/`);
    const notListening = ok(await call(s, 'expose_port', { sandbox_id: id, port: 9999 }), 'a port nothing listens on');
    const r = await fetch(notListening.url);
    assert.equal(r.status, 502);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'PORT_NOT_LISTENING');
    toolError(await call(s, 'expose_port', { sandbox_id: 'sb_doesnotexist000000', port: 8000 }), 'SANDBOX_NOT_FOUND');
    const bad = await call(s, 'expose_port', { sandbox_id: id, port: 70000 });
    assert.equal(bad.isError, true, 'the input schema refuses a port above 65535');
  } finally {
    await s.close();
  }
  ok(await call(c, 'destroy_sandbox', { sandbox_id: id }), 'destroy_sandbox');
});
