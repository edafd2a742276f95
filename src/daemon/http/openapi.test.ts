// The OpenAPI document and the server's routes are one set: adding a route without documenting
// it (or documenting one that does not exist) fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildHttpServer } from './server.ts';
import { OPERATIONS, openApiDocument } from './openapi.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';

const manager = {
  config: { files: { maxUploadBytes: 1 << 20 }, exec: { defaultTimeoutMs: 1000, maxTimeoutMs: 2000, outputCap: 1024 } },
} as unknown as SandboxManager;

test('every registered route is documented, and every documented route exists', async () => {
  const app = buildHttpServer(manager, { bodyLimit: 1024, info: () => ({}) as never });
  await app.ready();
  const registered = (app as unknown as { emberdRoutes: { method: string; url: string }[] }).emberdRoutes
    .filter((r) => r.method !== 'HEAD')
    .map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`);
  const documented = OPERATIONS.map((o) => `${o.method.toUpperCase()} ${o.path}`);
  assert.deepEqual([...new Set(registered)].sort(), [...documented].sort());
  const res = await app.inject({ method: 'GET', url: '/openapi.json' });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.json(), JSON.parse(JSON.stringify(openApiDocument())));
  await app.close();
});

test('request bodies come from the zod schemas the routes parse with', () => {
  const doc = openApiDocument() as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties?: Record<string, unknown> } }> } }>> };
  const exec = doc.paths['/sandboxes/{id}/exec']!.post!.requestBody!.content['application/json']!.schema;
  for (const field of ['code', 'argv', 'env', 'cwd', 'stdin', 'stdin_base64', 'timeout_ms', 'output_encoding', 'background', 'session']) {
    assert.ok(exec.properties && field in exec.properties, `exec body lacks ${field}`);
  }
  const create = doc.paths['/sandboxes']!.post!.requestBody!.content['application/json']!.schema;
  assert.ok(create.properties && 'language_pack' in create.properties);
});
