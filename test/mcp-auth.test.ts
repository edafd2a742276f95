// The daemon's bearer-token auth applies to MCP on both transports: /mcp answers 401 without the
// token (before MCP sees the request) and serves with it; `emberd mcp` sends the token it finds
// (EMBERD_TOKEN_FILE here) and turns a refused one into UNAUTHORIZED tool errors. Also the
// Inspector's --cli over Streamable HTTP with the header. A daemon with auth on; no VM is booted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { fetch as plainFetch } from 'undici';
import { Client, StreamableHTTPClientTransport, type FetchLike } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { TOOL_NAMES, call, ok, text, toolError } from './helpers/mcp-tool-session.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const NODE = join(ROOT, 'node_modules/.bin/node');
const MAIN = join(ROOT, 'src/daemon/main.ts');
const INSPECTOR = join(ROOT, 'node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js');

let d: TestDaemon;
before(async () => { d = await startDaemon(['--auth', 'on', '--snapshots', 'off', '--pool-size', '0']); });
after(async () => { assert.equal(await d.stop(), 0, d.log()); });

const tokenFile = () => join(d.runDir, 'state', 'token');

function httpClient(era: 'legacy' | 'auto', headers: Record<string, string>): { c: Client; transport: StreamableHTTPClientTransport } {
  // Undici's fetch: the test daemon checks its own answers against /openapi.json (mcp-http.test.ts).
  const transport = new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers }, fetch: plainFetch as unknown as FetchLike });
  return { c: new Client({ name: 'emberd-test', version: '1.0.0' }, { versionNegotiation: { mode: era } }), transport };
}

test('/mcp without the token: 401 UNAUTHORIZED from the daemon, and the MCP client cannot connect', async () => {
  const r = await plainFetch(`${d.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="emberd"');
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED');
  for (const era of ['legacy', 'auto'] as const) {
    const { c, transport } = httpClient(era, { authorization: `Bearer ${'0'.repeat(64)}` });
    await assert.rejects(c.connect(transport), era);
    await c.close();
  }
});

for (const era of ['legacy', 'auto'] as const) {
  test(`/mcp with the token (${era}): tools are listed and answer through the daemon's own auth`, async () => {
    const { c, transport } = httpClient(era, { authorization: `Bearer ${d.token}` });
    await c.connect(transport);
    try {
      assert.deepEqual((await c.listTools()).tools.map((t) => t.name).sort(), TOOL_NAMES);
      assert.deepEqual(ok(await call(c, 'list_sandboxes', {}), 'list_sandboxes').sandboxes, []);
      toolError(await call(c, 'read_file', { sandbox_id: 'sb_doesnotexist000000', path: '/x' }), 'SANDBOX_NOT_FOUND');
    } finally {
      await c.close();
    }
  });
}

async function stdio(env: Record<string, string>): Promise<{ c: Client; stderr: () => string }> {
  const transport = new StdioClientTransport({ command: NODE, args: [MAIN, 'mcp', '--addr', d.addr], env: { ...env, HOME: d.runDir }, stderr: 'pipe' });
  let stderr = '';
  (transport.stderr as PassThrough).on('data', (b: Buffer) => { stderr += b.toString(); });
  const c = new Client({ name: 'emberd-test', version: '1.0.0' });
  await c.connect(transport);
  return { c, stderr: () => stderr };
}

test('emberd mcp sends the token of EMBERD_TOKEN_FILE; a wrong token makes UNAUTHORIZED tool errors and a line on stderr', async () => {
  const good = await stdio({ EMBERD_TOKEN_FILE: tokenFile() });
  try {
    assert.deepEqual(ok(await call(good.c, 'list_sandboxes', {}), 'with the token').sandboxes, []);
  } finally {
    await good.c.close();
  }
  assert.equal(good.stderr(), '');
  const bad = await stdio({ EMBERD_TOKEN: '0'.repeat(64) });
  try {
    const r = await call(bad.c, 'list_sandboxes', {});
    toolError(r, 'UNAUTHORIZED');
    assert.match(text(r), /the bearer token is not this daemon's/);
  } finally {
    await bad.c.close();
  }
  assert.match(bad.stderr(), /^emberd mcp: UNAUTHORIZED: /);
});

test('the MCP Inspector\'s --cli lists the tools over Streamable HTTP with the bearer header (JSON output)', async () => {
  const home = mkdtempSync('/tmp/emb-insp-'); // the Inspector keeps a catalog and client config in HOME
  try {
    const out = await new Promise<string>((resolve, reject) => {
      execFile(NODE, [INSPECTOR, '--cli', '--format', 'json', '--method', 'tools/list', '--transport', 'http', '--server-url', `${d.url}/mcp`, '--header', `Authorization: Bearer ${d.token}`],
        { env: { PATH: process.env.PATH!, HOME: home }, timeout: 120_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
    });
    assert.deepEqual((JSON.parse(out) as { result: { tools: { name: string }[] } }).result.tools.map((t) => t.name).sort(), TOOL_NAMES);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
