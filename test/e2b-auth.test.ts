// The E2B-compatible API on a daemon with --auth on (docs/e2b.md, "Authentication"): E2B's SDKs
// cannot send emberd's bearer token on per-sandbox requests, so the control plane takes the
// daemon's token as the E2B API key (X-API-KEY) and every per-sandbox request needs the sandbox's
// own access token, which only the create answer holds.
// First: it keeps the real fetch before daemon.ts checks the global one (see the helper).
import { startDaemon, realFetch } from './helpers/e2b-fetch.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Sandbox, AuthenticationError } from 'e2b';


let d: Awaited<ReturnType<typeof startDaemon>>;
before(async () => { d = await startDaemon(['--pool-size', '0', '--snapshots', 'off', '--auth', 'on']); });
after(async () => {
  const file = `${d.runDir}.openapi-mismatches`;
  if (existsSync(file)) writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => l && !/^[A-Z]+ \/e2b\//.test(l)).map((l) => `${l}\n`).join(''));
  await d?.stop();
});

test('e2b_unusable_with_auth_on: the daemon token as the E2B API key creates and runs; another key is refused', async () => {
  assert.ok(d.token, 'the daemon has a token');
  const opts = { apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/sbx` };
  const sbx = await Sandbox.create({ ...opts, apiKey: d.token });
  try {
    const r = await sbx.commands.run('echo authed');
    assert.equal(r.stdout, 'authed\n');
    await sbx.files.write('/tmp/a.txt', 'x');
    assert.equal(await sbx.files.read('/tmp/a.txt'), 'x');
  } finally {
    await sbx.kill();
  }
  await assert.rejects(Sandbox.create({ ...opts, apiKey: 'e2b_0' }), AuthenticationError);
  const list = await realFetch(`${d.url}/e2b/v2/sandboxes`, { headers: { 'x-api-key': 'e2b_0' } });
  assert.equal(list.status, 401);
  assert.equal(((await list.json()) as { code: number }).code, 401);
  // emberd's own API still wants the bearer token.
  assert.equal((await realFetch(`${d.url}/sandboxes`)).status, 401);
});

test('with auth on, a per-sandbox request without the sandbox access token is refused', async () => {
  const create = await realFetch(`${d.url}/e2b/v2/sandboxes`, { method: 'POST', headers: { 'x-api-key': d.token!, 'content-type': 'application/json' }, body: JSON.stringify({ templateID: 'shell' }) });
  assert.equal(create.status, 201);
  const { sandboxID, envdAccessToken } = (await create.json()) as { sandboxID: string; envdAccessToken: string };
  try {
    assert.ok(envdAccessToken);
    const headers = { 'e2b-sandbox-id': sandboxID, 'e2b-sandbox-port': '49983' };
    const noToken = await realFetch(`${d.url}/e2b/sbx/files?path=/etc/hostname`, { headers });
    assert.equal(noToken.status, 401);
    const ok = await realFetch(`${d.url}/e2b/sbx/files?path=/etc/hostname`, { headers: { ...headers, 'x-access-token': envdAccessToken } });
    assert.equal(ok.status, 200);
  } finally {
    await realFetch(`${d.url}/e2b/sandboxes/${sandboxID}`, { method: 'DELETE', headers: { 'x-api-key': d.token! } });
  }
});
