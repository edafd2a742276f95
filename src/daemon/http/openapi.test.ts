// The OpenAPI document and the server's routes are one set: adding a route without documenting
// it (or documenting one that does not exist) fails here; the document is OpenAPI 3.1 in
// structure, every route's success and error answers have schemas, and the checker the e2e tests
// run every answer through accepts the handlers' shapes and names what drifted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildHttpServer } from './server.ts';
import { OPERATIONS, openApiDocument } from './openapi.ts';
import type { PackView, SandboxManager } from '../../sandbox/manager.ts';
import type { SandboxView } from '../../sandbox/sandbox.ts';
import type { ProcessView } from '../../sandbox/processes.ts';
import type { FileStat } from '../../sandbox/files/listing.ts';
import type { ResultBundle } from '../../sandbox/sessions.ts';
import type { z } from 'zod';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ERROR_STATUS } from '../../errors.ts';
import { responsesOf, resultBundle, sandboxView, type DaemonInfoAnswer, type FileStatAnswer, type PackList, type ProcessAnswer } from './responses.ts';
import type { DaemonInfo } from './info.ts';
import { ResponseChecker } from '../../../test/helpers/response-check.ts';

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

// ---- responses ----

type Doc = {
  openapi: string; info: { title: string; version: string };
  paths: Record<string, Record<string, { operationId: string; parameters?: { name: string; in: string }[]; responses: Record<string, { description?: string; content?: Record<string, { schema?: unknown }>; headers?: object }> }>>;
  components: { schemas: Record<string, unknown> };
};

test('the document is OpenAPI 3.1 in structure: operations, responses, media types, resolvable refs, schemas ajv compiles strictly', () => {
  const doc = JSON.parse(JSON.stringify(openApiDocument())) as Doc;
  assert.equal(doc.openapi, '3.1.0');
  assert.ok(doc.info.title && doc.info.version);
  const ids = new Set<string>();
  const refs: string[] = [];
  JSON.stringify(doc, (k, v) => { if (k === '$ref') refs.push(v); return v; });
  for (const r of refs) {
    const m = /^#\/components\/schemas\/(\w+)$/.exec(r);
    assert.ok(m && m[1]! in doc.components.schemas, `unresolved $ref ${r}`);
  }
  for (const [path, item] of Object.entries(doc.paths)) {
    assert.match(path, /^\//);
    for (const [method, op] of Object.entries(item)) {
      assert.ok(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'].includes(method), method);
      assert.ok(!ids.has(op.operationId), `duplicate operationId ${op.operationId}`);
      ids.add(op.operationId);
      const templated = [...path.matchAll(/\{(\w+)\}/g)].map((x) => x[1]).sort();
      assert.deepEqual((op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name).sort(), templated, `${method} ${path}: path parameters`);
      for (const [status, r] of Object.entries(op.responses)) {
        assert.match(status, /^([1-5]\d\d|[1-5]XX|default)$/, `${method} ${path}: response key ${status}`);
        assert.equal(typeof r.description, 'string', `${method} ${path} ${status}: a response needs a description`);
        for (const type of Object.keys(r.content ?? {})) assert.match(type, /^[\w.+-]+\/[\w.+*-]+$|^\*\/\*$/, `media type ${type}`);
      }
    }
  }
  const ajv = new Ajv2020({ strict: true });
  const defs = JSON.parse(JSON.stringify(doc.components.schemas), (k, v) => (k === '$ref' ? v.replace('#/components/schemas/', '#/$defs/') : v));
  ajv.addSchema({ $id: 'doc', $defs: defs }, 'doc');
  for (const name of Object.keys(defs)) assert.doesNotThrow(() => ajv.getSchema(`doc#/$defs/${name}`), `components.schemas.${name}`);
});

test('every route has a response schema for its success status and its errors', () => {
  const doc = JSON.parse(JSON.stringify(openApiDocument())) as Doc;
  for (const op of OPERATIONS) {
    const where = `${op.method.toUpperCase()} ${op.path}`;
    const r = responsesOf(op.method, op.path);
    assert.ok(r, `${where} has no entry in responses.ts RESPONSES`);
    const responses = doc.paths[op.path]![op.method]!.responses;
    const success = responses[String(op.ok)];
    assert.ok(success, `${where}: no response for its success status ${op.ok}`);
    if (op.ok === 204) assert.equal(success.content, undefined, `${where}: 204 has no body`);
    else assert.ok(success.content && Object.keys(success.content).length, `${where}: ${op.ok} has no content`);
    for (const [type, media] of Object.entries(success.content ?? {})) {
      if (type !== '*/*') assert.ok(media.schema, `${where} ${op.ok} ${type}: no schema`);
    }
    if (r.other === 'any') continue; // MCP answers its own errors in its own format
    const must = ['401', '500', 'default', ...(op.path.includes('{id}') ? ['404'] : []), ...(op.body || op.query ? ['400'] : [])];
    for (const status of must) {
      const e = responses[status];
      assert.ok(e?.content?.['application/json']?.schema, `${where}: no error schema for ${status}`);
    }
    for (const [status, e] of Object.entries(responses)) {
      if (!/^[45]/.test(status)) continue;
      const schema = doc.components.schemas[((e.content!['application/json']!.schema as { $ref: string }).$ref).split('/').pop()!] as { properties: { error: { properties: { code: { enum: string[] } } } } };
      const codes = schema.properties.error.properties.code.enum;
      assert.ok(codes.length && codes.every((c) => ERROR_STATUS[c as keyof typeof ERROR_STATUS] === Number(status)), `${where} ${status}: codes ${codes}`);
    }
  }
  const create = doc.paths['/sandboxes']!.post!.responses;
  for (const s of ['409', '429', '503', '504']) assert.ok(create[s], `POST /sandboxes lacks ${s}`);
  assert.ok(create['429']!.headers && create['503']!.headers, 'refusals that pass carry Retry-After');
  const exec = doc.paths['/sandboxes/{id}/exec']!.post!.responses;
  assert.deepEqual(Object.keys(exec['200']!.content!).sort(), ['application/json', 'application/x-ndjson']);
  assert.ok(exec['202'] && exec['429']);
  assert.deepEqual(Object.keys(doc.paths['/sandboxes/{id}/files']!.get!.responses['200']!.content!).sort(), ['application/octet-stream', 'application/x-tar']);
});

test('answers are checked against the document: the handlers\' shapes pass, a drifted one names the route, status and the ajv error', () => {
  const checker = new ResponseChecker(JSON.parse(JSON.stringify(openApiDocument())));
  const base = 'http://127.0.0.1:1';
  const answer = { stdout: 'hi\n', stderr: '', exit_code: 0, duration_ms: 3, timed_out: false, truncated: false };
  const exec = checker.expect('POST', `${base}/sandboxes/sb_1/exec`, 200, 'application/json; charset=utf-8');
  assert.equal(checker.check(exec, answer), undefined);
  const png = { 'image/png': 'iVBORw0KGgo=', 'text/plain': '<Figure size 640x480 with 1 Axes>', is_main_result: false };
  assert.equal(checker.check(exec, { ...answer, value: '42', session_reset: false, results: [png, { 'text/plain': '42', is_main_result: true }] }), undefined);
  assert.match(checker.check(exec, { ...answer, exit_code: undefined })!, /^POST \/sandboxes\/\{id\}\/exec 200: the body does not match/);
  assert.match(checker.check(exec, { ...answer, value: '42' })!, /does not match/, 'a session field without the others is neither answer');
  const lines = checker.expect('POST', `${base}/sandboxes/sb_1/exec`, 200, 'application/x-ndjson; charset=utf-8');
  for (const line of [{ type: 'stdout', data: 'a' }, { type: 'result', ...png }, { type: 'exit', exit_code: 0, duration_ms: 1, timed_out: false, truncated: false, value: null, session_reset: false }, { type: 'error', code: 'AGENT_TIMEOUT', message: 'x' }]) {
    assert.equal(checker.check(lines, line), undefined, JSON.stringify(line));
  }
  assert.match(checker.check(lines, { type: 'exit', exit_code: 0 })!, /a line does not match/);
  const notFound = checker.expect('GET', `${base}/sandboxes/nope`, 404, 'application/json');
  assert.equal(checker.check(notFound, { error: { code: 'SANDBOX_NOT_FOUND', message: 'no such sandbox' } }), undefined);
  assert.match(checker.check(notFound, { error: { code: 'INVALID_REQUEST', message: 'x' } })!, /does not match/, 'a 404 carries a 404 code');
  assert.throws(() => checker.expect('GET', `${base}/sandboxes`, 200, 'text/html'), /Content-Type text\/html is not one the document lists/);
  assert.throws(() => checker.expect('GET', `${base}/sandboxes`, 418, 'application/json'), /an error status its responses do not list/);
  assert.throws(() => checker.expect('DELETE', `${base}/sandboxes/sb_1`, 204, 'application/json'), /no body/);
  assert.deepEqual(checker.expect('POST', `${base}/e2b/sandboxes`, 201, 'application/json').body, { kind: 'opaque' }, 'the E2B API is not emberd\'s');
  assert.deepEqual(checker.expect('POST', `${base}/mcp`, 202, null).body, { kind: 'opaque' }, 'MCP answers in its own format');
  const route404 = checker.expect('GET', `${base}/nowhere`, 404, 'application/json');
  assert.equal(checker.check(route404, { error: { code: 'ROUTE_NOT_FOUND', message: 'no route' } }), undefined);
});

// The zod response schemas and the domain types the handlers map from are the same shapes: a field
// added to one without the other is a type error here (tsc), not a surprise at run time.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameShapes: [
  Same<z.infer<typeof sandboxView>, SandboxView>, Same<ProcessAnswer, ProcessView>, Same<FileStatAnswer, FileStat>,
  Same<PackList['packs'][number], PackView>, Same<DaemonInfo, DaemonInfoAnswer>, Same<z.infer<typeof resultBundle>, ResultBundle>,
] = [true, true, true, true, true, true];
void sameShapes;
