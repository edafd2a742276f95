// /mcp's own answers to bad requests, without VMs: the daemon's HTTP server on a host-agent
// manager, requests through inject.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { buildHttpServer } from '../daemon/http/server.ts';
import type { DaemonInfo } from '../daemon/http/info.ts';
import { testManagers } from '../../test/helpers/test-manager.ts';

const manager = testManagers('emb-mcp-http-').make({});
const app = buildHttpServer(manager, { bodyLimit: 1 << 20, info: () => ({}) as DaemonInfo });
after(() => app.close());

const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', host: '127.0.0.1:7777' };

test('mcp_deep_json_internal_error: a body nested thousands deep is a 400 JSON-RPC error, not a 500', async () => {
  for (const method of ['POST', 'DELETE'] as const) {
    const payload = `{"code":${'['.repeat(5000)}${']'.repeat(5000)}}`;
    const res = await app.inject({ method, url: '/mcp', headers, payload });
    assert.equal(res.statusCode, 400, `${method}: ${res.body}`);
    const body = res.json() as { jsonrpc: string; error: { code: number; message: string } };
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(body.error.code, -32600);
    assert.match(body.error.message, /nest/);
  }
  const rpc = (depth: number) => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_code","arguments":{"code":"1","x":${'['.repeat(depth)}${']'.repeat(depth)}}}}`;
  const ok = await app.inject({ method: 'POST', url: '/mcp', headers, payload: rpc(20) });
  assert.ok(ok.statusCode < 500, ok.body);
  assert.notEqual(ok.statusCode, 400, 'ordinary nesting is served');
});
