// Bearer-token auth over real HTTP (docs/security.md): a daemon started with --auth on refuses
// every request without its token (401, a JSON error with a code, WWW-Authenticate), serves the
// SDK and emberctl that read the token file, and a daemon told --auth off beyond loopback refuses
// to start. Boots one VM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startDaemon, http, type TestDaemon } from './helpers/daemon.ts';
import { EmberdApiError, EmberdClient } from '../src/sdk/client.ts';

const MAIN = fileURLToPath(new URL('../src/daemon/main.ts', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
let d: TestDaemon;

before(async () => { d = await startDaemon(['--auth', 'on', '--pool-size', '0', '--snapshots', 'off']); });
after(async () => { assert.equal(await d.stop(), 0, d.log()); });

test('without the token, or with another, every route answers 401 UNAUTHORIZED and does nothing', async () => {
  assert.ok(d.token, 'the daemon created its token file');
  const bad = { authorization: `Bearer ${'0'.repeat(64)}` };
  for (const [method, path, headers] of [
    ['GET', '/', {}], ['GET', '/openapi.json', {}], ['POST', '/sandboxes', {}], ['GET', '/sandboxes', bad],
    ['DELETE', '/sandboxes/sb_aaaaaaaaaaaaaaaaaaaa', bad], ['POST', '/sandboxes', { authorization: d.token! }], // not "Bearer <token>"
    ['GET', '/nope', {}],
  ] as const) {
    const r = await http(d, method, path, undefined, headers);
    assert.equal(r.status, 401, `${method} ${path}: ${r.text}`);
    assert.equal(r.json.error.code, 'UNAUTHORIZED');
    assert.match(r.json.error.message, /token/);
    assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="emberd"');
  }
  const list = await http(d, 'GET', '/sandboxes', undefined, { authorization: `Bearer ${d.token}` });
  assert.deepEqual(list.json, { sandboxes: [] }, 'the refused POSTs created nothing');
});

test('with the token: the SDK (given it, or from the token file) and emberctl work', async () => {
  const sb = await d.client.createSandbox({ language_pack: 'shell' });
  const viaFile = new EmberdClient(d.addr, { tokenFile: `${d.runDir}/state/token` });
  assert.equal((await viaFile.exec(sb.id, { code: 'echo $((6*7))' })).stdout, '42\n');
  const env = { ...process.env, EMBERD_ADDR: d.addr, EMBERD_TOKEN_FILE: `${d.runDir}/state/token` };
  const ls = spawnSync(process.execPath, [CLI, 'ls'], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(ls.status, 0, ls.stderr);
  assert.match(ls.stdout, new RegExp(sb.id));
  const noToken = spawnSync(process.execPath, [CLI, 'ls'], { env: { ...env, EMBERD_TOKEN_FILE: '', EMBERD_TOKEN: 'wrong' }, encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(noToken.status, 0);
  assert.match(noToken.stderr, /UNAUTHORIZED|token/);
  await assert.rejects(new EmberdClient(d.addr, { token: null }).listSandboxes(), (e) => e instanceof EmberdApiError && e.code === 'UNAUTHORIZED' && e.status === 401);
  await d.client.deleteSandbox(sb.id);
});

test('--auth off on an address beyond loopback: the daemon refuses to start (exit 2) and says why', () => {
  const r = spawnSync(process.execPath, [MAIN, '--addr', '0.0.0.0:7999', '--auth', 'off', '--state-dir', `${d.runDir}/s2`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--auth off is refused on 0\.0\.0\.0/);
});
