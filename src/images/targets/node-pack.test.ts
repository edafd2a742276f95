// The node pack: what its pruning keeps and removes (a fake tree); built twice from the same .debs
// it is byte-identical; as root, its node and bash run in a chroot of the unpacked image.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImages } from '../build.ts';
import { buildTestsSkipReason, hashes, testDownloadsDir } from '../testing.ts';
import { NODE_PACK, pruneNode } from './node-pack.ts';

test('node pruning drops TypeScript declarations, source maps, docs and iconv modules, keeps the JavaScript node loads', async () => {
  const tree = mkdtempSync(join(tmpdir(), 'node-prune-test-'));
  const keep = ['usr/bin/node', 'usr/share/nodejs/acorn/dist/acorn.js', 'usr/share/nodejs/acorn/dist/acorn.mjs', 'usr/share/nodejs/undici/package.json', 'usr/share/nodejs/undici/lib/llhttp/llhttp.wasm.js'];
  const gone = [
    'usr/share/nodejs/@types/node/fs.d.ts',
    'usr/share/nodejs/busboy/lib/index.d.ts',
    'usr/share/nodejs/acorn/dist/acorn.js.map',
    'usr/share/nodejs/undici/README.md',
    'usr/share/nodejs/undici/CHANGELOG',
    'usr/share/systemtap/tapset/node.stp',
    'usr/lib/x86_64-linux-gnu/gconv/UTF-16.so',
  ];
  try {
    for (const f of [...keep, ...gone]) {
      mkdirSync(join(tree, f, '..'), { recursive: true });
      writeFileSync(join(tree, f), 'x');
    }
    await pruneNode(tree);
    for (const f of keep) assert.ok(existsSync(join(tree, f)), `kept ${f}`);
    for (const f of gone) assert.ok(!existsSync(join(tree, f)), `removed ${f}`);
    assert.ok(!existsSync(join(tree, 'usr/share/nodejs/@types')));
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
});

test('the node pack runs code with node -e and has no npm', () => {
  assert.deepEqual(NODE_PACK.interpreter, ['node', '-e']);
  assert.ok(NODE_PACK.roots.includes('nodejs') && !NODE_PACK.roots.includes('npm'));
});

const skip = buildTestsSkipReason();
const base = mkdtempSync(join(tmpdir(), 'emberd-node-pack-test-'));
after(() => rmSync(base, { recursive: true, force: true }));

test('node pack is reproducible', { skip }, async () => {
  const downloadsDir = testDownloadsDir();
  const times: string[] = [];
  const results = [];
  for (const name of ['a', 'b']) {
    const t0 = performance.now();
    results.push(await buildImages({ dir: join(base, name), only: ['node'], downloadsDir }));
    times.push(`${((performance.now() - t0) / 1000).toFixed(1)}s`);
  }
  process.stderr.write(`# node pack builds: ${times.join(', ')}; ${results[0]?.manifest.files['packs/node.sqfs']?.size} bytes\n`);
  const [ra, rb] = results;
  assert.ok(ra !== undefined && rb !== undefined);
  assert.deepEqual(hashes(rb.manifest.files), hashes(ra.manifest.files));
  const pkgs = ra.manifest.inputs.packs['node']?.packages ?? [];
  const nodejs = pkgs.find((p) => p.name === 'nodejs');
  assert.match(nodejs?.version ?? '', /deb12/, 'Debian bookworm\'s nodejs, not another repository\'s');
  assert.ok(pkgs.some((p) => p.name === 'bash') && !pkgs.some((p) => p.name === 'npm'));
});

const canChroot =
  process.getuid?.() === 0 && spawnSync('unsquashfs', ['-help']).error === undefined && spawnSync('chroot', ['--version']).error === undefined;

test('node pack runs node (modules, ICU, TLS setup) and bash -l (chroot)', { skip: skip || (!canChroot && 'needs root, chroot and unsquashfs') }, () => {
  const root = join(base, 'root');
  const x = spawnSync('unsquashfs', ['-q', '-n', '-d', root, join(base, 'a', 'packs/node.sqfs')]);
  assert.equal(x.status, 0, x.stderr.toString());
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8' };
  const js =
    'const fs=require("fs"),zlib=require("zlib"),crypto=require("crypto"),tls=require("tls");' +
    'tls.createSecureContext();' +
    'console.log(6*7, zlib.gunzipSync(zlib.gzipSync("z")).toString(), crypto.createHash("sha256").update("").digest("hex").slice(0,8),' +
    ' new Intl.NumberFormat("de-DE").format(1234.5), fs.existsSync("/etc/ssl/certs/ca-certificates.crt"))';
  const node = spawnSync('chroot', [root, 'node', '-e', js], { env });
  assert.equal(node.stderr.toString(), '');
  assert.equal(node.stdout.toString(), '42 z e3b0c442 1.234,5 true\n');
  const bash = spawnSync('chroot', [root, 'bash', '-l', '-c', 'echo $0; type bash; command -v env which'], { env });
  assert.equal(bash.stderr.toString(), '');
  assert.equal(bash.stdout.toString(), 'bash\nbash is /usr/bin/bash\n/usr/bin/env\n/usr/bin/which\n');
});
