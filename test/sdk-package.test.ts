// The `emberd` npm package as a user gets it: `npm pack` (which builds it with the pinned tsc),
// the tarball installed offline into an empty folder, then docs/sdk.md's quick start run there with
// plain Node against a real daemon, and a TypeScript consumer type-checked against its .d.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { VERSION } from '../src/version.ts';

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

  // an empty project; a cache of its own, so nothing can come from a registry or the user's cache
  const app = join(dir, 'app');
  await run('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'sdk-example', private: true, type: 'module' }));
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--cache', join(dir, 'npm-cache'), join(dir, filename)], { cwd: app });
  const installed = JSON.parse(readFileSync(join(app, 'node_modules/emberd/package.json'), 'utf8'));
  assert.deepEqual(installed.dependencies ?? {}, {}, 'no runtime dependencies');

  writeFileSync(join(app, 'example.mjs'), quickStart());
  const env = { ...process.env, EMBERD_ADDR: d.addr, EMBERD_TOKEN: '' };
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
  const { Sandbox, EmberdError } = await import('../src/sdk/index.ts');
  await assert.rejects(Sandbox.create({ url: '127.0.0.1:1', token: null }), (e: unknown) =>
    e instanceof EmberdError && e.code === 'DAEMON_UNREACHABLE' && e.status === 0 && /Start it with `emberd`/.test(e.message) && /EMBERD_ADDR/.test(e.message));
});
