// The `emberd` npm package as a user gets it: `npm pack` (which builds it with the pinned tsc),
// the tarball installed offline into an empty folder, then docs/sdk.md's quick start run there with
// plain Node against a real daemon, and a TypeScript consumer type-checked against its .d.ts. Then
// the rest of the Sandbox API (from source) on the same daemon: streaming, results, aborts,
// background handles, files, lifetime.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { VERSION } from '../src/version.ts';
import { Sandbox, EmberdError, type ResultBundle } from '../src/sdk/index.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PKG = join(ROOT, 'sdk/typescript');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

let d: TestDaemon;
let dir: string;

before(async () => {
  dir = mkdtempSync('/tmp/emb-sdk-');
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
});
after(async () => {
  for (const s of await d.client.listSandboxes()) await d.client.deleteSandbox(s.id).catch(() => {});
  assert.equal(await d.stop(), 0, d.log());
  rmSync(dir, { recursive: true, force: true });
});

/** The first ```js block after "### Quick start" in docs/sdk.md. */
function quickStart(): string {
  const md = readFileSync(join(ROOT, 'docs/sdk.md'), 'utf8');
  const m = /### Quick start[\s\S]*?```js\n([\s\S]*?)```/.exec(md);
  assert.ok(m, 'docs/sdk.md has a Quick start with a js block');
  return m[1]!;
}

test('the packed package installs offline into an empty folder and runs the docs example with plain Node', async () => {
  // npm pack runs the package's prepack: the build (npm run build:sdk in the root)
  const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: PKG, maxBuffer: 16 << 20 });
  const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; version: string; files: { path: string }[] }[];
  const { filename, version, files } = info[0]!;
  assert.equal(version, VERSION, 'the package version is the daemon\'s (src/version.ts)');

  // only the compiled SDK: its own modules and the one daemon module it shares (state-dir)
  const paths = files.map((f) => f.path).sort();
  const outside = paths.filter((p) => p !== 'package.json' && !/^dist\/(sdk\/[a-z-/]+|state-dir)\.(js|d\.ts)$/.test(p));
  assert.deepEqual(outside, [], 'the package ships only dist/sdk and dist/state-dir');
  for (const p of ['dist/sdk/index.js', 'dist/sdk/index.d.ts', 'dist/sdk/adapters/ai.js', 'dist/sdk/adapters/openai-agents.js', 'dist/sdk/adapters/deepagents.js']) {
    assert.ok(paths.includes(p), `${p} is packed`);
  }
  assert.ok(!paths.some((p) => p.endsWith('.ts') && !p.endsWith('.d.ts')), 'no TypeScript sources');

  // the compiled adapters load with their framework (the repo's devDependencies) and export what docs/sdk.md says
  const dist = (m: string) => import(join(PKG, 'dist/sdk/adapters', m));
  assert.equal(typeof (await dist('ai.js')).emberdTools, 'function');
  assert.equal(typeof (await dist('openai-agents.js')).emberdShellTool, 'function');
  const { EmberdSandbox } = await dist('deepagents.js');
  const { BaseSandbox } = await import('deepagents');
  assert.ok(EmberdSandbox.prototype instanceof BaseSandbox);

  // an empty project; a cache of its own, so nothing can come from a registry or the user's cache
  const app = join(dir, 'app');
  await run('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'sdk-example', private: true, type: 'module' }));
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--cache', join(dir, 'npm-cache'), join(dir, filename)], { cwd: app });
  const installed = JSON.parse(readFileSync(join(app, 'node_modules/emberd/package.json'), 'utf8'));
  assert.deepEqual(installed.dependencies ?? {}, {}, 'no runtime dependencies');

  writeFileSync(join(app, 'example.mjs'), quickStart());
  const env = { ...process.env, EMBERD_URL: d.url, EMBERD_TOKEN: '' };
  const out = await run(process.execPath, ['example.mjs'], { cwd: app, env });
  assert.equal(out.stderr, '');
  assert.deepEqual(out.stdout.trim().split('\n'), [
    'sandbox sb_',
    'hello 42.0',
    '0', '1', '2',
    'hi from /tmp exit 3',
    'done',
    '1,2',
    'data.csv',
    'FILE_NOT_FOUND 404',
    'left 0',
  ]);
  assert.deepEqual(await d.client.listSandboxes(), [], '`await using` killed the sandbox');

  // import 'emberd' never loads a framework: none is installed here, and the adapters say so
  const adapter = await run(process.execPath, ['--input-type=module', '-e', "import('emberd/ai').then(() => console.log('loaded'), (e) => console.log(e.code, e.message))"], { cwd: app });
  assert.match(adapter.stdout, /^ERR_MODULE_NOT_FOUND .*'ai'/);

  // the .d.ts resolve through `exports` for a TypeScript consumer, and catch a misuse
  writeFileSync(join(app, 'consumer.ts'), [
    "import { Sandbox, EmberdError, type RunCodeResult, type CommandHandle } from 'emberd';",
    "const sb: Sandbox = await Sandbox.create({ pack: 'python', memoryMib: 256 });",
    "const r: RunCodeResult = await sb.runCode('1', { session: 'main', onResult: (b) => b['text/plain'] });",
    "const h: CommandHandle = await sb.commands.run('sleep 1', { background: true });",
    "const bytes: Uint8Array = await sb.files.read('/x', { format: 'bytes' });",
    "const e: string = new EmberdError(0, 'X', 'y').code;",
    "console.log(r.exitCode, h.id, bytes.length, e);",
    'await sb.kill();',
    '',
  ].join('\n'));
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'es2022', module: 'nodenext', strict: true, noEmit: true, types: ['node'], typeRoots: [join(ROOT, 'node_modules/@types')], lib: ['es2023', 'esnext.disposable'] },
    files: ['consumer.ts'],
  }));
  await run(process.execPath, [TSC, '-p', app]);
  writeFileSync(join(app, 'consumer.ts'), "import { Sandbox } from 'emberd';\nconst n: number = (await Sandbox.list())[0]!.pack;\n");
  await assert.rejects(run(process.execPath, [TSC, '-p', app]), (e: { stdout: string }) => /TS2322/.test(e.stdout), 'a wrong type is caught');
});

test('the SDK without a daemon: DAEMON_UNREACHABLE says how to start one', async () => {
  await assert.rejects(Sandbox.create({ url: '127.0.0.1:1', token: null }), (e: unknown) =>
    e instanceof EmberdError && e.code === 'DAEMON_UNREACHABLE' && e.status === 0 && /Start it with `emberd`/.test(e.message) && /EMBERD_ADDR/.test(e.message));
});

let shared: Sandbox | undefined;
/** One python sandbox for the API tests below. */
async function sandbox(): Promise<Sandbox> {
  shared ??= await Sandbox.create({ url: d.addr, token: null, pack: 'python', env: { FROM_CREATE: 'yes' } });
  return shared;
}

const IMG_CELL = [
  'import base64',
  'class Img:',
  '    def _repr_png_(self):',
  "        return base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAYAAAD0In+KAAAAEUlEQVR4nGP4z8DwH4QZYAwAhBkH+ZXvZPMAAAAASUVORK5CYII=')",
].join('\n');

test('runCode: results answered whole and streamed (onResult in order with output), value, stdin, the sandbox env', async () => {
  const sb = await sandbox();
  await sb.runCode(IMG_CELL, { session: 'api' });
  const whole = await sb.runCode('print("a")\ndisplay(Img())\n6 * 7', { session: 'api' });
  assert.deepEqual(whole.results.map((b) => [Object.keys(b).filter((k) => k.includes('/')).sort(), b.is_main_result]), [[['image/png', 'text/plain'], false], [['text/plain'], true]]);
  assert.equal(whole.value, '42');

  const seen: string[] = [];
  const streamed = await sb.runCode('print("a", flush=True)\ndisplay(Img())\nprint("b")\n6 * 7', {
    session: 'api',
    onStdout: (s) => { if (seen.at(-1)?.startsWith('out:')) seen.push(`${seen.pop()}${s}`); else seen.push(`out:${s}`); }, // print may write in pieces
    onResult: (b: ResultBundle) => seen.push(`result:${b.is_main_result ? 'main' : Object.keys(b).filter((k) => k.includes('/')).sort().join('+')}`),
  });
  assert.deepEqual(seen, ['out:a\n', 'result:image/png+text/plain', 'out:b\n', 'result:main']);
  assert.deepEqual({ stdout: streamed.stdout, value: streamed.value, exitCode: streamed.exitCode, n: streamed.results.length }, { stdout: 'a\nb\n', value: '42', exitCode: 0, n: 2 });
  assert.equal(Buffer.from(streamed.results[0]!['image/png'] as string, 'base64').subarray(1, 4).toString(), 'PNG');

  const plain = await sb.runCode('import os, sys\nprint(os.environ["FROM_CREATE"], sys.stdin.read())', { stdin: new TextEncoder().encode('in') });
  assert.deepEqual({ stdout: plain.stdout, results: plain.results, value: plain.value, sessionReset: plain.sessionReset }, { stdout: 'yes in\n', results: [], value: null, sessionReset: false });
});

test('runCode: a signal aborted mid-cell rejects with its reason and interrupts the cell; the session keeps its state; a timeout is a result', async () => {
  const sb = await sandbox();
  await sb.runCode('kept = "still here"', { session: 'abort' });
  const ac = new AbortController();
  const reason = new Error('the agent gave up');
  await assert.rejects(sb.runCode('import time\nprint("started", flush=True)\ntime.sleep(600)', {
    session: 'abort', signal: ac.signal, onStdout: () => ac.abort(reason),
  }), (e) => e === reason);
  const after = await sb.runCode('kept', { session: 'abort' });
  assert.equal(after.value, "'still here'");
  const t = await sb.runCode('import time\ntime.sleep(600)', { session: 'abort', timeoutMs: 500 });
  assert.deepEqual({ timedOut: t.timedOut, exitCode: t.exitCode }, { timedOut: true, exitCode: 130 });
  assert.match(t.stderr, /KeyboardInterrupt/);
  const pre = new AbortController();
  pre.abort(reason);
  await assert.rejects(sb.runCode('1', { signal: pre.signal }), (e) => e === reason, 'an already aborted signal never starts the run');
});

test('commands: streamed output, bytes on stdin, timeouts; background handles: stdin, output, kill, connect', async () => {
  const sb = await sandbox();
  const chunks: string[] = [];
  const r = await sb.commands.run('echo one; echo two >&2; cat', { stdin: new Uint8Array([104, 105]), onStdout: (s) => chunks.push(s), onStderr: (s) => chunks.push(`err:${s}`) });
  assert.deepEqual({ stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode }, { stdout: 'one\nhi', stderr: 'two\n', exitCode: 0 });
  assert.equal(chunks.filter((c) => !c.startsWith('err:')).join(''), 'one\nhi');
  const slow = await sb.commands.run('sleep 600', { timeoutMs: 300 });
  assert.deepEqual({ timedOut: slow.timedOut, exitCode: slow.exitCode }, { timedOut: true, exitCode: 137 });

  const cat = await sb.commands.run('cat; echo " end" >&2', { background: true });
  await cat.sendStdin('héllo');
  await cat.sendStdin(new Uint8Array([33]), { eof: true });
  const done = await cat.wait();
  assert.deepEqual({ stdout: done.stdout, stderr: done.stderr, exitCode: done.exitCode }, { stdout: 'héllo!', stderr: ' end\n', exitCode: 0 });
  assert.deepEqual(await sb.commands.connect(cat.id).output(), { stdout: 'héllo!', stderr: ' end\n' });

  const sleeper = await sb.commands.run('exec sleep 600', { background: true });
  assert.equal(await sleeper.running(), true);
  await sleeper.kill();
  const killed = await sleeper.wait();
  assert.equal(killed.exitCode, 137, 'SIGKILL: 128 + 9');
  assert.equal(await sleeper.running(), false);
});

test('files: bytes exactly, text, streams, stat, exists, list, remove; errors carry the daemon\'s code', async () => {
  const sb = await sandbox();
  const bytes = new Uint8Array([0, 0xff, 0xfe, 0x0a, 0xc3]);
  assert.deepEqual(await sb.files.write('/root/f/bin', bytes, { mode: 0o600 }), { path: '/root/f/bin', size: 5 });
  assert.deepEqual(await sb.files.read('/root/f/bin', { format: 'bytes' }), bytes);
  assert.ok((await sb.files.read('/root/f/bin')).includes('\ufffd'), 'text replaces invalid UTF-8');
  await sb.files.write('/root/f/t.txt', 'ünïcode\n');
  const chunks: Buffer[] = [];
  for await (const c of await sb.files.read('/root/f/t.txt', { format: 'stream' })) chunks.push(c as Buffer);
  assert.equal(Buffer.concat(chunks).toString(), 'ünïcode\n');
  assert.equal((await sb.files.stat('/root/f/bin')).mode, '0600');
  assert.deepEqual((await sb.files.list('/root/f')).map((e) => [e.name, e.type, e.size]), [['bin', 'file', 5], ['t.txt', 'file', 10]]);
  assert.equal(await sb.files.exists('/root/f/t.txt'), true);
  assert.equal(await sb.files.exists('/root/f/none'), false);
  await assert.rejects(sb.files.remove('/root/f'), (e) => e instanceof EmberdError && e.code === 'DIRECTORY_NOT_EMPTY' && e.status === 409);
  await sb.files.remove('/root/f', { recursive: true });
  assert.equal(await sb.files.exists('/root/f'), false);
  await assert.rejects(sb.files.read('relative'), (e) => e instanceof EmberdError && e.code === 'INVALID_PATH' && e.status === 400);
});

test('lifetime: setTimeout, info, connect, list, kill (twice), asyncDispose after kill; bad creates', async () => {
  const sb = await sandbox();
  const before = await sb.info();
  const moved = await sb.setTimeout(7200);
  assert.notEqual(moved.expiresAt, before.expiresAt);
  assert.equal((await sb.info()).expiresAt, moved.expiresAt);
  const again = await Sandbox.connect(sb.id, { url: d.addr, token: null });
  assert.deepEqual({ id: again.id, pack: again.pack }, { id: sb.id, pack: 'python' });
  assert.ok((await Sandbox.list({ url: d.addr, token: null })).some((s) => s.id === sb.id && s.state === 'ready' && s.pack === 'python'));
  await assert.rejects(Sandbox.connect('sb_aaaaaaaaaaaaaaaaaaaa', { url: d.addr, token: null }), (e) => e instanceof EmberdError && e.code === 'SANDBOX_NOT_FOUND' && e.status === 404);
  await assert.rejects(Sandbox.create({ url: d.addr, token: null, pack: 'cobol' }), (e) => e instanceof EmberdError && e.code === 'UNKNOWN_LANGUAGE_PACK' && /python/.test(e.message));

  assert.equal(await sb.kill(), true);
  shared = undefined;
  assert.equal(await again.kill(), false, 'already gone');
  await sb[Symbol.asyncDispose](); // nothing to do, no error
  await assert.rejects(sb.runCode('1'), (e) => e instanceof EmberdError && e.code === 'SANDBOX_NOT_FOUND');
  assert.deepEqual(await Sandbox.list({ url: d.addr, token: null }), []);
});
