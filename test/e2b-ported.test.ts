// The shape of E2B's own JS SDK test cases (e2b-dev/E2B packages/js-sdk/tests/sandbox: commands/,
// files/, and the sandbox lifecycle files), written anew and run with the official e2b SDK against
// a real daemon. Each test is named "<their file>: <their case>"; where a case asserts what SDK
// 2.51 itself no longer does (it now answers commands.kill of an unknown pid with false, and
// sendStdin needs stdin: true), the port follows the SDK. docs/e2b.md lists what passes.
// First: it keeps the real fetch before daemon.ts checks the global one (see the helper).
import { startDaemon, eventually, realFetch } from './helpers/e2b-fetch.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Sandbox, CommandExitError, NotFoundError, FileType } from 'e2b';

const E2B_ANSWER = /^[A-Z]+ (\/e2b\/|\/files )/;

let d: Awaited<ReturnType<typeof startDaemon>>;
let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
let sandbox: Sandbox;

before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  opts = { apiKey: 'e2b_0', apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/sbx` };
  sandbox = await Sandbox.create({ ...opts, envs: { FOO: 'bar' }, metadata: { suite: 'ported' } });
});

after(async () => {
  await sandbox?.kill().catch(() => {});
  const file = `${d.runDir}.openapi-mismatches`;
  if (existsSync(file)) writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => l && !E2B_ANSWER.test(l)).map((l) => `${l}\n`).join(''));
  await d?.stop();
});

// ---- commands/run ----

test('commands/run: run', async () => {
  const cmd = await sandbox.commands.run('echo "Hello, World!"');
  assert.equal(cmd.exitCode, 0);
  assert.equal(cmd.stdout, 'Hello, World!\n');
});

test('commands/run: run with special characters', async () => {
  const cmd = await sandbox.commands.run('echo "!@#$%^&*()_+"');
  assert.equal(cmd.stdout, '!@#$%^&*()_+\n');
});

test('commands/run: run with multiline string', async () => {
  const cmd = await sandbox.commands.run('echo "Hello,\nWorld!"');
  assert.equal(cmd.stdout, 'Hello,\nWorld!\n');
});

test('commands/run: run with timeout', async () => {
  assert.equal((await sandbox.commands.run('echo ok', { timeoutMs: 4000 })).exitCode, 0);
});

test('commands/run: run with too short timeout', async () => {
  await assert.rejects(sandbox.commands.run('sleep 10', { timeoutMs: 1000 }));
});

// ---- commands/envVars ----

test('commands/envVars: sandbox global env vars', async () => {
  assert.equal((await sandbox.commands.run('echo $FOO')).stdout.trim(), 'bar');
});

test('commands/envVars: bash command scoped env vars do not leak', async () => {
  assert.equal((await sandbox.commands.run('echo $SCOPED', { envs: { SCOPED: 'yes' } })).stdout.trim(), 'yes');
  assert.equal((await sandbox.commands.run('echo "$SCOPED"')).stdout.trim(), '');
});

test('commands/envVars: python command scoped env vars', async () => {
  const cmd = await sandbox.commands.run('python3 -c "import os; print(os.environ[\'SCOPED\'])"', { envs: { SCOPED: 'py' } });
  assert.equal(cmd.stdout.trim(), 'py');
});

test('commands/envVars: default env vars (E2B_SANDBOX, E2B_SANDBOX_ID, /run/e2b)', async () => {
  assert.equal((await sandbox.commands.run('echo "$E2B_SANDBOX"')).stdout.trim(), 'true');
  assert.equal((await sandbox.commands.run('cat /run/e2b/.E2B_SANDBOX')).stdout.trim(), 'true');
  assert.equal((await sandbox.commands.run('echo "$E2B_SANDBOX_ID"')).stdout.trim(), sandbox.sandboxId);
  assert.equal((await sandbox.commands.run('cat /run/e2b/.E2B_SANDBOX_ID')).stdout.trim(), sandbox.sandboxId);
});

// ---- commands/kill, list, connect, sendStdin ----

test('commands/kill: kill process', async () => {
  const cmd = await sandbox.commands.run('sleep 10', { background: true });
  await sandbox.commands.kill(cmd.pid);
  await assert.rejects(sandbox.commands.run(`kill -0 ${cmd.pid}`), CommandExitError);
  await assert.rejects(cmd.wait(), CommandExitError);
});

test('commands/kill: kill non-existing process (SDK 2.51: false)', async () => {
  assert.equal(await sandbox.commands.kill(999_999), false);
});

test('commands/list: list processes', async () => {
  const c1 = await sandbox.commands.run('sleep 10', { background: true });
  const c2 = await sandbox.commands.run('sleep 10', { background: true });
  const pids = (await sandbox.commands.list()).map((p) => p.pid);
  assert.ok(pids.includes(c1.pid) && pids.includes(c2.pid));
  await c1.kill();
  await c2.kill();
});

test('commands/connect: connect to process', async () => {
  const cmd = await sandbox.commands.run('sleep 1; echo done', { background: true });
  const again = await sandbox.commands.connect(cmd.pid);
  assert.equal((await again.wait()).stdout, 'done\n');
});

for (const [name, text] of [['send stdin to process', 'Hello, World!'], ['send special characters to stdin', '!@#$%^&*()_+'], ['send multiline string to stdin', 'Hello,\nWorld!']] as const) {
  test(`commands/sendStdin: ${name}`, async () => {
    const cmd = await sandbox.commands.run('cat', { background: true, stdin: true });
    await sandbox.commands.sendStdin(cmd.pid, text);
    await eventually(() => cmd.stdout === text, 10_000, 'the echo of stdin');
    await cmd.kill();
    assert.equal(cmd.stdout, text);
  });
}

test('commands/sendStdin: send empty stdin to process', async () => {
  const cmd = await sandbox.commands.run('cat', { background: true, stdin: true });
  await sandbox.commands.sendStdin(cmd.pid, '');
  await cmd.kill();
  assert.equal(cmd.stdout, '');
});

// ---- files ----

test('files/write: write file', async () => {
  await sandbox.files.write('test_write.txt', 'This is a test file.');
  assert.equal(await sandbox.files.exists('test_write.txt'), true);
  assert.equal(await sandbox.files.read('test_write.txt'), 'This is a test file.');
});

test('files/write: overwrite file', async () => {
  await sandbox.files.write('test_overwrite.txt', 'Initial content.');
  await sandbox.files.write('test_overwrite.txt', 'New content.');
  assert.equal(await sandbox.files.read('test_overwrite.txt'), 'New content.');
});

test('files/write: write to non-existing directory', async () => {
  await sandbox.files.write('non_existing_dir/test_write.txt', 'This should succeed too.');
  assert.equal(await sandbox.files.read('non_existing_dir/test_write.txt'), 'This should succeed too.');
});

test('files/write: write multiple files', async () => {
  const files = [{ path: 'multi/one.txt', data: '1' }, { path: '/home/user/multi/two.txt', data: '2' }];
  const infos = await sandbox.files.write(files);
  assert.deepEqual(infos.map((i) => i.path).sort(), ['/home/user/multi/one.txt', '/home/user/multi/two.txt']);
  assert.equal(await sandbox.files.read('multi/two.txt'), '2');
});

test('files/read: read file', async () => {
  await sandbox.files.write('test_read.txt', 'Hello, world!');
  assert.equal(await sandbox.files.read('test_read.txt'), 'Hello, world!');
});

test('files/read: read non-existing file', async () => {
  await assert.rejects(sandbox.files.read('non_existing_file.txt'), NotFoundError);
});

test('files/list: list directory', async () => {
  await sandbox.files.makeDir('test_directory');
  assert.equal((await sandbox.files.list('test_directory')).length, 0);
  await sandbox.files.write('test_directory/test_file', 'test');
  const files = await sandbox.files.list('test_directory');
  assert.equal(files.length, 1);
  assert.equal(files[0]!.name, 'test_file');
  assert.equal(files[0]!.type, FileType.FILE);
  assert.equal(files[0]!.path, '/home/user/test_directory/test_file');
});

test('files/list: list directory with depth', async () => {
  await sandbox.files.makeDir('depth/a/b');
  await sandbox.files.write('depth/a/b/c.txt', 'c');
  assert.deepEqual((await sandbox.files.list('depth', { depth: 1 })).map((e) => e.name), ['a']);
  assert.deepEqual((await sandbox.files.list('depth', { depth: 3 })).map((e) => e.path).sort(),
    ['/home/user/depth/a', '/home/user/depth/a/b', '/home/user/depth/a/b/c.txt']);
});

test('files/info: get info of a file', async () => {
  await sandbox.files.write('test_file.txt', 'test');
  const info = await sandbox.files.getInfo('test_file.txt');
  const pwd = (await sandbox.commands.run('pwd')).stdout.trim();
  assert.equal(info.name, 'test_file.txt');
  assert.equal(info.type, FileType.FILE);
  assert.equal(info.path, `${pwd}/test_file.txt`);
});

test('files/info: get info of a file that does not exist', async () => {
  await assert.rejects(sandbox.files.getInfo('test_does_not_exist.txt'), NotFoundError);
});

test('files/info: get info of a directory', async () => {
  await sandbox.files.makeDir('test_dir');
  const info = await sandbox.files.getInfo('test_dir');
  assert.equal(info.type, FileType.DIR);
  assert.equal(info.path, '/home/user/test_dir');
});

test('files/info: get info of a directory that does not exist', async () => {
  await assert.rejects(sandbox.files.getInfo('test_does_not_exist_dir'), NotFoundError);
});

test('files/exists: file exists', async () => {
  await sandbox.files.write('test_exists.txt', 'x');
  assert.equal(await sandbox.files.exists('test_exists.txt'), true);
});

test('files/exists: file does not exist', async () => {
  assert.equal(await sandbox.files.exists('test_not_exists.txt'), false);
});

test('files/makeDir: make directory', async () => {
  assert.equal(await sandbox.files.makeDir('test_make_dir'), true);
  assert.equal(await sandbox.files.exists('test_make_dir'), true);
});

test('files/makeDir: make directory that already exists', async () => {
  await sandbox.files.makeDir('test_existing_dir');
  assert.equal(await sandbox.files.makeDir('test_existing_dir'), false);
});

test('files/makeDir: make nested directory', async () => {
  assert.equal(await sandbox.files.makeDir('nested/dir/inside'), true);
  assert.equal(await sandbox.files.exists('nested/dir/inside'), true);
});

test('files/remove: remove file', async () => {
  await sandbox.files.write('test_remove.txt', 'This file will be removed.');
  await sandbox.files.remove('test_remove.txt');
  assert.equal(await sandbox.files.exists('test_remove.txt'), false);
});

test('files/remove: remove non-existing file', async () => {
  await sandbox.files.remove('non_existing_file.txt');
});

test('files/rename: rename file', async () => {
  await sandbox.files.write('test_rename_old.txt', 'This file will be renamed.');
  const info = await sandbox.files.rename('test_rename_old.txt', 'test_rename_new.txt');
  assert.equal(info.name, 'test_rename_new.txt');
  assert.equal(info.type, FileType.FILE);
  assert.equal(info.path, '/home/user/test_rename_new.txt');
  assert.equal(await sandbox.files.exists('test_rename_old.txt'), false);
  assert.equal(await sandbox.files.read('test_rename_new.txt'), 'This file will be renamed.');
});

test('files/rename: rename non-existing file', async () => {
  await assert.rejects(sandbox.files.rename('non_existing_file.txt', 'new_non_existing_file.txt'), NotFoundError);
});

test('files/watch: watch directory (not supported: rejects)', async () => {
  await assert.rejects(sandbox.files.watchDir('/home/user', () => {}));
});

// ---- sandbox lifecycle ----

test('create: create with metadata, getInfo', async () => {
  const info = await sandbox.getInfo();
  assert.deepEqual(info.metadata, { suite: 'ported' });
  assert.equal(info.state, 'running');
});

test('connect: connect to a running sandbox', async () => {
  const again = await Sandbox.connect(sandbox.sandboxId, opts);
  assert.equal(await again.isRunning(), true);
  assert.equal((await again.commands.run('echo $FOO')).stdout.trim(), 'bar');
});

test('list: list sandboxes, filter by metadata, paginate', { timeout: 300_000 }, async () => {
  const other = await Sandbox.create('shell', { ...opts, metadata: { suite: 'ported', extra: '1' } });
  try {
    const all = await Sandbox.list({ ...opts, query: { metadata: { suite: 'ported' } } }).nextItems();
    assert.deepEqual(all.map((s) => s.sandboxId).sort(), [sandbox.sandboxId, other.sandboxId].sort());
    const only = await Sandbox.list({ ...opts, query: { metadata: { extra: '1' } } }).nextItems();
    assert.deepEqual(only.map((s) => s.sandboxId), [other.sandboxId]);
    const pager = Sandbox.list({ ...opts, limit: 1 });
    const first = await pager.nextItems();
    assert.equal(first.length, 1);
    assert.equal(pager.hasNext, true);
    const second = await pager.nextItems();
    assert.equal(second.length, 1);
    assert.notEqual(second[0]!.sandboxId, first[0]!.sandboxId);
    assert.equal(pager.hasNext, false);
    assert.equal((await Sandbox.list({ ...opts, query: { state: ['paused'] } }).nextItems()).length, 0);
  } finally {
    await other.kill();
  }
});

test('setTimeout: shorten the timeout and the sandbox expires', { timeout: 300_000 }, async () => {
  const s = await Sandbox.create('shell', { ...opts, timeoutMs: 300_000 });
  await s.setTimeout(1_000);
  await eventually(async () => !(await s.isRunning()), 60_000, 'the sandbox expiring');
});

test('kill: kill the sandbox', { timeout: 300_000 }, async () => {
  const s = await Sandbox.create('shell', opts);
  await s.kill();
  assert.equal(await s.isRunning(), false);
});

test('older SDKs: POST /sandboxes without /v2 creates too', { timeout: 300_000 }, async () => {
  const res = await realFetch(`${d.url}/e2b/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': 'e2b_0' }, body: JSON.stringify({ templateID: 'shell', timeout: 60 }) });
  assert.equal(res.status, 201);
  const body = (await res.json()) as { sandboxID: string; envdVersion: string };
  assert.equal(body.envdVersion, '0.5.7');
  assert.equal(await Sandbox.kill(body.sandboxID, opts), true);
});
