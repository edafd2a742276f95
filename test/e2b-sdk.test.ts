// The official E2B SDKs (e2b, @e2b/code-interpreter) against a real daemon and real VMs, pointed
// at it by the three settings docs/e2b.md gives. The cases follow the shape of E2B's own SDK
// tests (sandbox lifecycle, commands, filesystem, code interpreter), written anew.
//
// The test daemon helper checks every answer against emberd's /openapi.json, in the test's fetch
// and inside the daemon (a preload that records mismatches in <runDir>.openapi-mismatches). E2B's
// surfaces follow E2B's API instead, so their answers go through the unwrapped fetch (captured
// before the helper wraps it) and their lines are taken out of the daemon's record before stop()
// reads it; every other answer stays checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Sandbox, CommandExitError, NotFoundError, FileType } from 'e2b';
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter';

const realFetch = globalThis.fetch;
const { startDaemon, eventually } = await import('./helpers/daemon.ts');
const checkedFetch = globalThis.fetch;
globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
  const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
  const e2b = url.pathname.startsWith('/e2b/') || (url.pathname === '/files' && url.searchParams.has('signature'));
  return (e2b ? realFetch : checkedFetch)(input, init);
}) as typeof fetch;

type Daemon = Awaited<ReturnType<typeof startDaemon>>;
let d: Daemon;
let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
let sbx: Sandbox;

before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  opts = { apiKey: 'e2b_0', apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/sbx` };
  sbx = await Sandbox.create({ ...opts, metadata: { suite: 'e2b-sdk', role: 'main' }, envs: { FROM_CREATE: 'yes' } });
});

/** Mismatch lines start with the route: "POST /e2b/v2/sandboxes (no such route) 201: ..."; /files is the signed URLs'. */
const E2B_ANSWER = /^[A-Z]+ (\/e2b\/|\/files )/;

after(async () => {
  await sbx?.kill().catch(() => {});
  const file = `${d.runDir}.openapi-mismatches`;
  if (existsSync(file)) writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => l && !E2B_ANSWER.test(l)).map((l) => `${l}\n`).join(''));
  await d?.stop();
});

// ---- the README examples ----

test('README: commands.run and files.list in a sandbox', async () => {
  const r = await sbx.commands.run('echo "hello from e2b"');
  assert.equal(r.stdout, 'hello from e2b\n');
  assert.equal(r.exitCode, 0);
  const entries = await sbx.files.list('/');
  assert.ok(entries.some((e) => e.name === 'etc' && e.type === FileType.DIR));
});

test('README (code interpreter): runCode returns the text of the last expression', { timeout: 300_000 }, async () => {
  const ci = await CodeSandbox.create({ ...opts });
  try {
    await ci.runCode('x = 1');
    const ex = await ci.runCode('x += 1; x');
    assert.equal(ex.text, '2');
    // state, stdout, a traceback, a chart
    const out = await ci.runCode('print("hi", x)');
    assert.equal(out.logs.stdout.join(''), 'hi 2\n'); // chunks as the interpreter wrote them
    const err = await ci.runCode('1/0');
    assert.equal(err.error?.name, 'ZeroDivisionError');
    assert.equal(err.error?.value, 'division by zero');
    assert.match(err.error!.traceback, /Traceback \(most recent call last\)/);
    assert.deepEqual(err.logs.stderr, []);
    const chart = await ci.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()');
    const png = chart.results.find((r) => r.png);
    assert.ok(png, `no PNG result: ${JSON.stringify(chart.results.map((r) => r.formats()))} ${JSON.stringify(chart.error)}`);
    assert.equal(Buffer.from(png.png!, 'base64').subarray(1, 4).toString(), 'PNG');
    // contexts are sessions: separate state, cwd
    const ctx = await ci.createCodeContext({ cwd: '/tmp' });
    const inCtx = await ci.runCode('import os; os.getcwd()', { context: ctx });
    assert.equal(inCtx.text, "'/tmp'");
    const isolated = await ci.runCode('x', { context: ctx });
    assert.equal(isolated.error?.name, 'NameError');
    const streamed: string[] = [];
    await ci.runCode('print("a"); print("b")', { onStdout: (m) => { streamed.push(m.line); } });
    assert.equal(streamed.join(''), 'a\nb\n');
    const envd = await ci.runCode('import os; os.environ.get("CELL_ONLY")', { envs: { CELL_ONLY: 'set' } });
    assert.equal(envd.text, "'set'");
    assert.equal((await ci.runCode('import os; os.environ.get("CELL_ONLY")')).text, undefined);
    assert.ok((await ci.listCodeContexts()).some((c) => c.id === ctx.id));
    // The context calls carry only the traffic token, and without it they are refused.
    const bare = await realFetch(`${d.url}/e2b/sbx/contexts`, { headers: { 'e2b-sandbox-id': ci.sandboxId, 'e2b-sandbox-port': '49999' } });
    assert.equal(bare.status, 401);
    await ci.removeCodeContext(ctx);
  } finally {
    await ci.kill();
  }
});

// ---- sandbox lifecycle ----

test('sandbox: isRunning, getInfo with metadata, list filtered by metadata', async () => {
  assert.equal(await sbx.isRunning(), true);
  const info = await sbx.getInfo();
  assert.equal(info.sandboxId, sbx.sandboxId);
  assert.equal(info.templateId, 'base');
  assert.deepEqual(info.metadata, { suite: 'e2b-sdk', role: 'main' });
  const page = await Sandbox.list({ ...opts, query: { metadata: { role: 'main' } } }).nextItems();
  assert.deepEqual(page.map((s) => s.sandboxId), [sbx.sandboxId]);
  assert.deepEqual(await Sandbox.list({ ...opts, query: { metadata: { role: 'none' } } }).nextItems(), []);
});

test('sandbox: envVars of the create reach commands', async () => {
  assert.equal((await sbx.commands.run('echo $FROM_CREATE')).stdout, 'yes\n');
});

test('sandbox: connect by id gives a working handle; setTimeout moves endAt', async () => {
  const again = await Sandbox.connect(sbx.sandboxId, opts);
  assert.equal((await again.commands.run('echo connected')).stdout, 'connected\n');
  const before = (await sbx.getInfo()).endAt.getTime();
  await sbx.setTimeout(600_000);
  assert.ok((await sbx.getInfo()).endAt.getTime() > before);
});

test('sandbox: a wrong access token is refused', async () => {
  const forged = await Sandbox.connect(sbx.sandboxId, opts);
  (forged as unknown as { envdAccessToken: string }).envdAccessToken = 'ea_forged'; // read by each RPC
  await assert.rejects(forged.commands.run('true'), /X-Access-Token/);
  const res = await realFetch(`${d.url}/e2b/sbx/process.Process/List`, {
    method: 'POST', body: '{}', headers: { 'content-type': 'application/json', 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983' },
  });
  assert.equal(res.status, 401);
  assert.equal(((await res.json()) as { code: string }).code, 'unauthenticated');
});

test('sandbox: kill, then it is gone; connecting to an unknown id fails', { timeout: 300_000 }, async () => {
  const s = await Sandbox.create('shell', { ...opts, timeoutMs: 120_000 });
  assert.equal((await s.commands.run('echo shell pack')).stdout, 'shell pack\n');
  await s.kill();
  assert.equal(await s.isRunning(), false);
  assert.equal(await Sandbox.kill(s.sandboxId, opts), false);
  await assert.rejects(Sandbox.connect('sb_doesnotexist000000', opts), NotFoundError);
});

test('sandbox: expiry at its timeout', { timeout: 300_000 }, async () => {
  const s = await Sandbox.create('shell', { ...opts, timeoutMs: 2_000 });
  await eventually(async () => !(await s.isRunning()), 60_000, 'the sandbox expiring');
  assert.deepEqual((await Sandbox.list(opts).nextItems()).map((x) => x.sandboxId).filter((id) => id === s.sandboxId), []);
});

// ---- commands ----

test('commands: onStdout/onStderr stream, env, cwd', async () => {
  const out: string[] = [];
  const err: string[] = [];
  const r = await sbx.commands.run('echo one; echo two >&2; echo $GREETING; pwd', {
    envs: { GREETING: 'hi' }, cwd: '/tmp', onStdout: (s) => { out.push(s); }, onStderr: (s) => { err.push(s); },
  });
  assert.equal(r.stdout, 'one\nhi\n/tmp\n');
  assert.equal(r.stderr, 'two\n');
  assert.equal(out.join(''), r.stdout);
  assert.equal(err.join(''), 'two\n');
  assert.equal((await sbx.commands.run('pwd')).stdout, '/home/user\n');
});

test('commands: a non-zero exit throws CommandExitError with the output', async () => {
  await assert.rejects(sbx.commands.run('echo failing >&2; exit 3'), (e: unknown) => {
    assert.ok(e instanceof CommandExitError);
    assert.equal(e.exitCode, 3);
    assert.equal(e.stderr, 'failing\n');
    return true;
  });
});

test('commands: background, list, connect, kill', async () => {
  const h = await sbx.commands.run('echo started; sleep 600', { background: true });
  assert.ok(h.pid > 0);
  assert.ok((await sbx.commands.list()).some((p) => p.pid === h.pid && p.cmd === '/bin/bash'));
  const seen: string[] = [];
  const again = await sbx.commands.connect(h.pid, { onStdout: (s) => { seen.push(s); } });
  assert.equal(await sbx.commands.kill(h.pid), true);
  await assert.rejects(h.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === -1);
  await assert.rejects(again.wait(), CommandExitError);
  assert.equal(await sbx.commands.kill(h.pid), false);
  assert.ok(!(await sbx.commands.list()).some((p) => p.pid === h.pid));
});

test('commands: stdin (sendStdin, closeStdin)', async () => {
  const h = await sbx.commands.run('cat', { background: true, stdin: true });
  await sbx.commands.sendStdin(h.pid, 'line one\n');
  await h.sendStdin('line two\n');
  await h.closeStdin();
  const r = await h.wait();
  assert.equal(r.stdout, 'line one\nline two\n');
});

test('commands: a command timeout ends the command', async () => {
  await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1_000 }));
});

// ---- filesystem ----

test('files: write, read, exists, getInfo, list', async () => {
  const info = await sbx.files.write('/tmp/fs/hello.txt', 'hello world');
  assert.equal(info.path, '/tmp/fs/hello.txt');
  assert.equal(await sbx.files.read('/tmp/fs/hello.txt'), 'hello world');
  assert.equal(await sbx.files.exists('/tmp/fs/hello.txt'), true);
  assert.equal(await sbx.files.exists('/tmp/fs/missing.txt'), false);
  const st = await sbx.files.getInfo('/tmp/fs/hello.txt');
  assert.equal(st.type, FileType.FILE);
  assert.equal(st.size, 11);
  assert.equal(st.permissions, '-rw-r--r--');
  assert.deepEqual((await sbx.files.list('/tmp/fs')).map((e) => e.name), ['hello.txt']);
});

test('files: relative paths are under /home/user', async () => {
  await sbx.files.write('rel.txt', 'relative');
  assert.equal((await sbx.commands.run('cat /home/user/rel.txt')).stdout, 'relative');
});

test('files: binary and a large file round-trip', async () => {
  const bin = new Uint8Array(256).map((_, i) => i);
  await sbx.files.write('/tmp/fs/bin', bin.buffer);
  assert.deepEqual(new Uint8Array(await sbx.files.read('/tmp/fs/bin', { format: 'bytes' })), bin);
  const big = Buffer.alloc(6 << 20);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
  await sbx.files.write('/tmp/fs/big', new Blob([big]));
  const back = Buffer.from(await sbx.files.read('/tmp/fs/big', { format: 'bytes' }));
  assert.equal(back.length, big.length);
  assert.ok(back.equals(big));
  assert.equal((await sbx.commands.run('stat -c %s /tmp/fs/big')).stdout.trim(), String(big.length));
});

test('files: writeFiles (several in one multipart upload)', async () => {
  const r = await sbx.files.write([{ path: '/tmp/multi/a.txt', data: 'A' }, { path: '/tmp/multi/b.txt', data: 'B' }]);
  assert.deepEqual(r.map((x) => x.path).sort(), ['/tmp/multi/a.txt', '/tmp/multi/b.txt']);
  assert.equal(await sbx.files.read('/tmp/multi/b.txt'), 'B');
});

test('files: makeDir, rename, remove, reading a missing file', async () => {
  assert.equal(await sbx.files.makeDir('/tmp/fs/dir/sub'), true);
  assert.equal(await sbx.files.makeDir('/tmp/fs/dir/sub'), false);
  await sbx.files.write('/tmp/fs/dir/sub/x.txt', 'x');
  const moved = await sbx.files.rename('/tmp/fs/dir/sub/x.txt', '/tmp/fs/dir/y.txt');
  assert.equal(moved.path, '/tmp/fs/dir/y.txt');
  assert.equal(await sbx.files.read('/tmp/fs/dir/y.txt'), 'x');
  const deep = await sbx.files.list('/tmp/fs/dir', { depth: 2 });
  assert.deepEqual(deep.map((e) => e.path).sort(), ['/tmp/fs/dir/sub', '/tmp/fs/dir/y.txt']);
  await sbx.files.remove('/tmp/fs/dir');
  assert.equal(await sbx.files.exists('/tmp/fs/dir'), false);
  await assert.rejects(sbx.files.read('/tmp/fs/dir/y.txt'), NotFoundError);
});

test('files: uploadUrl and downloadUrl (signed, no headers)', async () => {
  const up = await sbx.uploadUrl('/tmp/signed.txt', { useSignatureExpiration: 60 });
  const form = new FormData();
  form.append('file', new Blob(['signed upload']), 'signed.txt');
  const put = await realFetch(up.replace(new URL(up).origin, d.url), { method: 'POST', body: form });
  assert.equal(put.status, 200, await put.clone().text());
  const down = await sbx.downloadUrl('/tmp/signed.txt');
  const got = await realFetch(down.replace(new URL(down).origin, d.url));
  assert.equal(await got.text(), 'signed upload');
  const bad = await realFetch(`${d.url}/files?path=/tmp/signed.txt&signature=v1_forged`);
  assert.equal(bad.status, 401);
});

// ---- bad input: E2B's error shapes, each with emberd's stable code and how to fix it ----

test('bad input: unknown template, bad JSON, bad timeout, unknown routes, unknown sandbox', async () => {
  await assert.rejects(Sandbox.create('no-such-pack', opts), /language pack "no-such-pack" is not available; available packs: /);
  const post = (path: string, body: string, headers: Record<string, string> = {}) =>
    realFetch(`${d.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const cases: [Response, number, string][] = [
    [await post('/e2b/v2/sandboxes', '{nope'), 400, 'INVALID_JSON'],
    [await post('/e2b/v2/sandboxes', JSON.stringify({ templateID: 'shell', timeout: -1 })), 400, 'INVALID_REQUEST'],
    [await post('/e2b/v2/sandboxes', JSON.stringify({ templateID: 'shell', metadata: { n: 1 } })), 400, 'INVALID_REQUEST'],
    [await post(`/e2b/sandboxes/${sbx.sandboxId}/timeout`, '{}'), 400, 'INVALID_REQUEST'],
    [await post('/e2b/sandboxes/sb_nope/timeout', '{"timeout": 5}'), 404, 'SANDBOX_NOT_FOUND'],
    [await post('/e2b/templates', '{}'), 404, 'ROUTE_NOT_FOUND'],
    [await post('/e2b/sbx/files', 'x', { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983' }), 401, 'UNAUTHORIZED'],
  ];
  for (const [res, status, code] of cases) {
    const body = (await res.json()) as { code: number; message: string; emberd_code: string };
    assert.equal(res.status, status, body.message);
    assert.deepEqual([body.code, body.emberd_code], [status, code]);
    assert.ok(body.message.length > 20, body.message);
  }
  const rpc = await post('/e2b/sbx/process.Process/Nope', '{}', { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983' });
  assert.equal(rpc.status, 404);
});
