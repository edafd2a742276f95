// Property tests (fast-check) of every HTTP input: each exported zod schema, given arbitrary JSON
// (bodies) or arbitrary string maps (query strings) through parseBody/parseQuery, parses or throws
// INVALID_REQUEST with a message, nothing else; and the real Fastify server (app.inject, no
// sockets; the host-agent backend, no VM), sent arbitrary methods, ids, query strings, content
// types, bodies and tokens on every route of OPERATIONS, answers below 500 (except the admission
// refusals a create may legitimately get) and every error as {error: {code, message}} with a code
// of ERROR_STATUS and its status. Values are biased towards the schemas' own keys, enums and
// bounds (read from their JSON Schema) so that the deeper rules are reached, not only "not an
// object". EMBERD_FC_SCALE=N multiplies the run counts for a long hunt.
//
// No request here can reach the host: with no VM the agent runs as a host process, so execs and
// file operations go only to a sandbox whose agent was killed (they parse, then answer 409
// SANDBOX_FAILED); the one live sandbox gets only the routes that cannot run or touch anything.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fc from 'fast-check';
import { z } from 'zod';
import type { FastifyInstance } from 'fastify';
import { ERROR_STATUS, EmberdError } from '../../errors.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { testManagers } from '../../../test/helpers/test-manager.ts';
import * as schemas from './schemas.ts';
import { OPERATIONS } from './openapi.ts';
import { parseBody, parseQuery } from './parse.ts';
import { buildHttpServer } from './server.ts';
import type { DaemonInfo } from './info.ts';

const SCALE = Number(process.env.EMBERD_FC_SCALE ?? 1);
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });

const SCHEMAS = Object.entries(schemas as Record<string, unknown>).filter((e): e is [string, z.ZodType] => e[1] instanceof z.ZodType);

// ---- a vocabulary read from the schemas' JSON Schema: keys, enums, bounds ----

const KEYS = new Set<string>(['__proto__', 'constructor', 'toString']);
const VALUES: unknown[] = [0, -1, 1, 1.5, -0, 2 ** 31, 2 ** 53, 1e308, -1e308, '', ' ', 'x', '0', '1', 'true', 'false', 'SIGTERM', 'KILL', 'SIGNOPE', 'aGk=', '=', 'a=b', 'print(6*7)', '/', '/tmp', '..', '../..', 'a/../../b', '\u0000', '\ud800', true, false, null, [], {}, [''], ['sh', '-c', 'true']];

function collect(schema: unknown): void {
  if (!schema || typeof schema !== 'object') return;
  const s = schema as Record<string, unknown>;
  if (Array.isArray(s.enum)) VALUES.push(...s.enum);
  for (const bound of ['minimum', 'maximum'] as const) {
    if (typeof s[bound] === 'number') VALUES.push(s[bound], (s[bound] as number) - 1, (s[bound] as number) + 1);
  }
  for (const bound of ['minLength', 'maxLength', 'minItems', 'maxItems'] as const) {
    const n = s[bound];
    if (typeof n === 'number' && n <= 1 << 16) VALUES.push('y'.repeat(n), 'y'.repeat(n + 1));
  }
  if (s.properties && typeof s.properties === 'object') {
    for (const [k, v] of Object.entries(s.properties)) { KEYS.add(k); collect(v); }
  }
  for (const v of Object.values(s)) if (v && typeof v === 'object') collect(v);
}
for (const [, s] of SCHEMAS) collect(z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }));

const key = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...KEYS) }, fc.string({ maxLength: 12 }));
const leaf = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...VALUES) },
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
);
/** JSON values shaped like the API's bodies: objects with its keys, its enums and bounds as values. */
const { value: biased } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.dictionary(key, tie('value'), { maxKeys: 6 }),
    fc.array(tie('value'), { maxLength: 4 }),
  ),
}));
/** Any JSON a client can send: arbitrary, biased, or with own "__proto__" keys (as JSON.parse makes). */
const jsonBody = fc.oneof(
  fc.jsonValue(),
  biased,
  fc.tuple(fc.dictionary(key, biased, { maxKeys: 3 }), biased).map(([o, p]) => JSON.parse(`{"__proto__":${JSON.stringify(p) ?? 'null'},${JSON.stringify(o).slice(1)}`.replace(/,}$/, '}'))),
);
const queryValue = fc.oneof(fc.constantFrom(...VALUES.filter((v): v is string => typeof v === 'string')), fc.string({ maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 12 }));
/** What Fastify's query parser gives a route: strings, or arrays of them for a repeated key. */
const queryObject = fc.dictionary(key, fc.oneof({ weight: 4, arbitrary: queryValue }, fc.array(queryValue, { minLength: 2, maxLength: 3 })), { maxKeys: 5 });

function assertInvalidRequest(e: unknown, where: string): void {
  assert.ok(e instanceof EmberdError, `not an EmberdError: ${e instanceof Error ? e.stack : String(e)}`);
  assert.equal(e.code, 'INVALID_REQUEST');
  assert.ok(e.message.startsWith(`invalid ${where}: `) && e.message.length > `invalid ${where}: `.length, e.message);
}

test('the schemas are all here (a new export is fuzzed without editing this file)', () => {
  assert.ok(SCHEMAS.length >= 12, `only ${SCHEMAS.length} schemas`);
  for (const k of ['code', 'argv', 'env', 'timeout_s', 'signal', 'path', 'max_bytes']) assert.ok(KEYS.has(k), k);
});

for (const [name, schema] of SCHEMAS) {
  test(`${name}: arbitrary JSON through parseBody parses or is INVALID_REQUEST, never another exception`, () => {
    fc.assert(fc.property(jsonBody, (v) => {
      try { parseBody(schema, v); } catch (e) { assertInvalidRequest(e, 'request body'); }
    }), runs(300));
  });
  test(`${name}: arbitrary query strings through parseQuery parse or are INVALID_REQUEST`, () => {
    fc.assert(fc.property(fc.oneof(queryObject, jsonBody), (q) => {
      try { parseQuery(schema, q, 'a hint'); } catch (e) { assertInvalidRequest(e, 'query string'); }
    }), runs(200));
  });
}

// ---- the real server ----

const managers = testManagers('emb-inputs-');
const manager = managers.make({ sandboxes: { max: 3 } });
const TOKEN = 'ab'.repeat(32);
const BODY_LIMIT = 64 * 1024;
const open = buildHttpServer(manager, { bodyLimit: BODY_LIMIT, info: () => ({}) as DaemonInfo });
const authed = buildHttpServer(manager, { bodyLimit: BODY_LIMIT, info: () => ({}) as DaemonInfo, auth: { token: TOKEN, tokenFile: '/nonexistent/token' } });
let live: Sandbox;
let failed: Sandbox;

/** A sandbox whose agent was killed: every route parses its input, then refuses with 409. */
async function failedSandbox(): Promise<Sandbox> {
  const sb = await manager.create();
  process.kill(sb.vm!.pid, 'SIGKILL');
  await sb.vm!.exited;
  await sb.released;
  assert.equal(sb.state, 'failed');
  return sb;
}

before(async () => {
  live = await manager.create();
  failed = await failedSandbox();
});
after(async () => { await open.close(); await authed.close(); });

/** Routes the live sandbox may get: none runs anything in it or touches a file. */
const HARMLESS_ON_LIVE = new Set([
  'get /sandboxes/{id}', 'get /sandboxes/{id}/processes', 'get /sandboxes/{id}/processes/{pid}', 'get /sandboxes/{id}/processes/{pid}/output',
  'post /sandboxes/{id}/processes/{pid}/stdin', 'post /sandboxes/{id}/processes/{pid}/signal', 'get /sandboxes/{id}/processes/{pid}/wait',
  'delete /sandboxes/{id}/processes/{pid}', 'get /sandboxes/{id}/sessions', 'delete /sandboxes/{id}/sessions/{name}',
]);
/** 5xx answers that are not bugs: admission refusals of a create (the host is short of memory or busy). */
const LEGITIMATE_5XX: Record<string, string[]> = { 'post /sandboxes': ['HOST_MEMORY_LOW', 'TOO_BUSY'] };

/** encodeURIComponent, for any JS string (a lone surrogate travels as UTF-8's replacement character). */
const enc = (s: string) => encodeURIComponent(Buffer.from(s, 'utf8').toString('utf8'));
const urlChar = fc.constantFrom(...'abcXYZ019-._~!$&\'()*+,;=:@/?%#[]{}|^`"<>\\ '.split(''));
const rawText = (maxLength: number) => fc.array(urlChar, { maxLength }).map((a) => a.join(''));
type Target = 'live' | 'failed' | 'random';
const param = fc.oneof(
  fc.string({ maxLength: 30 }).map(enc),
  fc.string({ unit: 'binary', maxLength: 10 }).map(enc),
  rawText(20).filter((s) => !/[?#]/.test(s)), // percent signs and slashes as they come
  fc.constantFrom('', 'p1', 'sb_00000000000000000000', '%', '%zz', '%ff', '%00', '..', 'a'.repeat(9000)),
);
const query = fc.oneof(
  fc.constant(''),
  queryObject.map((q) => Object.entries(q).flatMap(([k, v]) => [v].flat().map((x) => `${enc(k)}=${enc(x)}`)).join('&')),
  rawText(40),
  fc.constantFrom('path=%', 'path=%zz&path=x', 'offset=1e400', 'max_bytes=0x10', 'timeout_ms=-0', 'recursive=yes', '=&&==', 'a[b]=c', '__proto__=x'),
);
const contentType = fc.option(fc.oneof(
  { weight: 3, arbitrary: fc.constant('application/json') },
  fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x',
    'application/octet-stream', 'application/x-tar', 'application/json; charset=utf-16', ';', '', '*/*'),
  fc.string({ maxLength: 30 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')),
), { nil: undefined });
const body = fc.option(fc.oneof(
  { weight: 4, arbitrary: jsonBody.map((v) => JSON.stringify(v) ?? 'null') },
  fc.string({ maxLength: 60 }),
  fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a)),
  fc.constantFrom('', '   ', '{', '[', 'null', '"x"', '{"code": 1e999}', `{"code":${'['.repeat(5000)}${']'.repeat(5000)}}`, 'x'.repeat(BODY_LIMIT + 1),
    JSON.stringify({ code: 'y'.repeat(BODY_LIMIT) })),
), { nil: undefined });
const authorization = fc.option(fc.oneof(
  fc.constant(`Bearer ${TOKEN}`), fc.constant(`bearer  ${TOKEN} `), fc.constant('Bearer '), fc.constant(`Bearer ${TOKEN}x`),
  fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')),
), { nil: undefined });

const request = fc.record({
  op: fc.constantFrom(...OPERATIONS.map((o) => `${o.method} ${o.path}`)),
  otherMethod: fc.option(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH'), { freq: 8, nil: undefined }),
  target: fc.constantFrom<Target>('live', 'failed', 'random'),
  params: fc.array(param, { minLength: 2, maxLength: 2 }),
  query,
  contentType,
  body,
  ndjson: fc.boolean(),
  auth: fc.integer({ min: 0, max: 3 }).map((n) => n === 0), // a quarter of the requests meet the token check
  authorization,
});
type Req = typeof request extends fc.Arbitrary<infer T> ? T : never;

async function send(r: Req) {
  const opKey = r.op;
  const [opMethod, opPath] = opKey.split(' ') as [string, string];
  // Another method on a harmless path may be a harmful route (DELETE /sandboxes/{id}).
  const target = r.target === 'live' && (!HARMLESS_ON_LIVE.has(opKey) || r.otherMethod !== undefined) ? 'failed' : r.target;
  if (target === 'failed' && manager.list().every((s) => s.id !== failed.id)) failed = await failedSandbox(); // a DELETE or an expiry took it
  let i = 0;
  const path = opPath.replace(/\{(\w+)\}/g, (_m, name: string) => {
    const p = r.params[i++]!;
    if (name === 'id' && target !== 'random') return target === 'live' ? live.id : failed.id;
    return p;
  });
  const method = r.otherMethod ?? opMethod.toUpperCase();
  const headers: Record<string, string> = {};
  if (r.contentType !== undefined) headers['content-type'] = r.contentType;
  if (r.ndjson) headers.accept = 'application/x-ndjson';
  if (r.authorization !== undefined) headers.authorization = r.authorization;
  const res = await (r.auth ? authed : open).inject({
    method: method as 'GET',
    url: r.query ? `${path}?${r.query}` : path,
    headers,
    ...(r.body !== undefined ? { payload: r.body } : {}),
  });
  return { res, opKey, method, target };
}

/**
 * router_errors_wrong_shape: errors the router answers itself, before any route or hook, came in
 * Fastify's shape ({error: "Bad Request", code: "FST_ERR_...", message, statusCode}), not ours,
 * until server.ts passed them through its error mapping (frameworkErrors).
 */
test('router_errors_wrong_shape: a malformed %-escape in the path, or a path parameter over 8192 characters, answers {error: {code, message}}', async () => {
  for (const url of ['/sandboxes/%zz', '/sandboxes/%', `/sandboxes/${live.id}/processes/%E0%A4%A`, `/sandboxes/${'a'.repeat(9000)}`, `/sandboxes/x/sessions/${'b'.repeat(8193)}`]) {
    const res = await open.inject({ method: 'GET', url });
    const json = res.json() as { error?: { code?: keyof typeof ERROR_STATUS; message?: string } };
    assert.deepEqual(Object.keys(json), ['error'], `${url.slice(0, 60)}: ${res.body.slice(0, 200)}`);
    assert.ok(json.error?.code && ERROR_STATUS[json.error.code] === res.statusCode && res.statusCode < 500, res.body.slice(0, 200));
    assert.ok(json.error.message);
  }
});

test('the server, sent arbitrary requests on every route, answers < 500 with the JSON error shape, and keeps serving', async () => {
  const crashes: unknown[] = [];
  const onCrash = (e: unknown) => crashes.push(e);
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  const statuses = new Map<number, number>();
  try {
    await fc.assert(fc.asyncProperty(request, async (r) => {
      const { res, opKey, method, target } = await send(r);
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      const where = `${method} ${(res.raw.req.url ?? "").slice(0, 200)} (${opKey}, ${target}): ${res.statusCode} ${res.body.slice(0, 300)}`;
      // A valid create (on whichever route it came): give the slot back so later creates are tried too.
      for (const sb of manager.list()) if (sb !== live && sb !== failed) await manager.destroy(sb.id);
      if (res.statusCode < 400) return;
      if (method !== 'HEAD' && opKey.endsWith(' /mcp') && res.headers['content-type'] === 'application/json' && 'jsonrpc' in (res.json() as object)) {
        // MCP's own errors are JSON-RPC, which its clients read (auth's 401 stays emberd's shape).
        const rpc = res.json() as { jsonrpc: unknown; error?: { code?: unknown; message?: unknown } };
        assert.equal(rpc.jsonrpc, '2.0', where);
        assert.ok(Number.isInteger(rpc.error?.code) && typeof rpc.error?.message === 'string' && rpc.error.message.length > 0, where);
        assert.ok(res.statusCode < 500, where);
      } else if (method !== 'HEAD') {
        assert.match(String(res.headers['content-type']), /^application\/json/, where);
        const json = res.json() as { error?: { code?: unknown; message?: unknown }; code?: unknown };
        assert.deepEqual(Object.keys(json), ['error'], where);
        assert.deepEqual(Object.keys(json.error!).sort(), ['code', 'message'], where);
        const code = json.error!.code as keyof typeof ERROR_STATUS;
        assert.ok(code in ERROR_STATUS, `unknown code: ${where}`);
        assert.equal(ERROR_STATUS[code], res.statusCode, `status of ${code}: ${where}`);
        assert.ok(typeof json.error!.message === 'string' && json.error!.message.length > 0, where);
        if (res.statusCode >= 500) assert.ok(LEGITIMATE_5XX[opKey]?.includes(code), `5xx: ${where}`);
      } else {
        assert.ok(res.statusCode < 500, where);
      }
    }), runs(3000));
  } finally {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
  }
  assert.deepEqual(crashes, []);
  // Still serving, and the live sandbox untouched.
  const still = await open.inject({ method: 'GET', url: `/sandboxes/${live.id}` });
  assert.equal(still.json().state, 'ready', still.body);
  assert.equal(live.state, 'ready');
  console.log(`statuses: ${[...statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}x${n}`).join(' ')}`);
});
