// The python-data pack: Agg as matplotlib's default, the BLAS/LAPACK links, what its pruning keeps
// (fake trees); built twice from the same .debs it is byte-identical (bytecode and the font cache
// included); as root, numpy, pandas and matplotlib work in a chroot of the unpacked image without
// a word on stderr (no font cache rebuild, no backend fallback).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImages } from '../build.ts';
import { buildTestsSkipReason, hashes, testDownloadsDir } from '../testing.ts';
import { PYTHON_DATA_PACK, setAggBackend } from './python-data-pack.ts';
import { PYTHON_PACK } from './python-pack.ts';

test('setAggBackend: Debian\'s TkAgg line goes, one Agg line comes first, the rest stays', async () => {
  const tree = mkdtempSync(join(tmpdir(), 'mplrc-test-'));
  try {
    mkdirSync(join(tree, 'etc'));
    writeFileSync(join(tree, 'etc/matplotlibrc'), '## backend: Agg (a comment)\nbackend: TkAgg\n#backend_fallback: True\nlines.linewidth: 2\n');
    await setAggBackend(tree);
    const rc = readFileSync(join(tree, 'etc/matplotlibrc'), 'utf8');
    assert.deepEqual(rc.split('\n').filter((l) => /^\s*backend\s*:/.test(l)), ['backend: Agg']);
    assert.match(rc, /^## backend: Agg \(a comment\)$/m);
    assert.match(rc, /^lines\.linewidth: 2\n$/m);
    await setAggBackend(tree); // idempotent
    assert.equal(readFileSync(join(tree, 'etc/matplotlibrc'), 'utf8'), rc);
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
});

test('python-data is the python pack plus the data libraries; the GUI-laden packages come without their dependencies', () => {
  for (const r of PYTHON_PACK.roots) assert.ok(PYTHON_DATA_PACK.roots.includes(r), r);
  assert.deepEqual(PYTHON_DATA_PACK.interpreter, PYTHON_PACK.interpreter);
  for (const p of ['python3-numpy', 'python3-pandas']) assert.ok(PYTHON_DATA_PACK.roots.includes(p), p);
  for (const p of ['python3-matplotlib', 'python3-pil', 'python3-fonttools']) assert.ok(PYTHON_DATA_PACK.extras.includes(p), p);
  for (const p of ['python3-tk', 'python3-scipy', 'libjs-jquery']) assert.ok(![...PYTHON_DATA_PACK.roots, ...PYTHON_DATA_PACK.extras].includes(p), p);
});

const skip = buildTestsSkipReason();
const base = mkdtempSync(join(tmpdir(), 'emberd-python-data-pack-test-'));
after(() => rmSync(base, { recursive: true, force: true }));

test('python-data pack is reproducible', { skip }, async () => {
  const downloadsDir = testDownloadsDir();
  const times: string[] = [];
  const results = [];
  for (const name of ['a', 'b']) {
    const t0 = performance.now();
    results.push(await buildImages({ dir: join(base, name), only: ['python-data'], downloadsDir }));
    times.push(`${((performance.now() - t0) / 1000).toFixed(1)}s`);
  }
  process.stderr.write(`# python-data pack builds: ${times.join(', ')}; ${results[0]?.manifest.files['packs/python-data.sqfs']?.size} bytes\n`);
  const [ra, rb] = results;
  assert.ok(ra !== undefined && rb !== undefined);
  assert.deepEqual(hashes(rb.manifest.files), hashes(ra.manifest.files));
  const pkgs = (ra.manifest.inputs.packs['python-data']?.packages ?? []).map((p) => p.name);
  for (const p of ['python3-numpy', 'python3-pandas', 'python3-matplotlib', 'python3-pil', 'libblas3', 'liblapack3', 'bash']) assert.ok(pkgs.includes(p), p);
  for (const p of ['python3-tk', 'libtk8.6', 'python3-scipy', 'gcc', 'libjs-jquery', 'fonts-lyx']) assert.ok(!pkgs.includes(p), p);
});

const canChroot =
  process.getuid?.() === 0 && spawnSync('unsquashfs', ['-help']).error === undefined && spawnSync('chroot', ['--version']).error === undefined;

test('python-data pack computes with numpy and pandas and draws with Agg (chroot)', { skip: skip || (!canChroot && 'needs root, chroot and unsquashfs') }, () => {
  const root = join(base, 'root');
  const x = spawnSync('unsquashfs', ['-q', '-n', '-d', root, join(base, 'a', 'packs/python-data.sqfs')]);
  assert.equal(x.status, 0, x.stderr.toString());
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8' };
  const py = [
    'import numpy as np, pandas as pd, matplotlib, matplotlib.pyplot as plt, PIL.ImageFont',
    'a = np.array([[1, 2], [3, 4]]); print((a @ a).tolist(), np.linalg.inv(np.eye(2)).tolist())',
    'print(pd.DataFrame({"k": ["x", "y", "x"], "v": [1, 2, 3]}).groupby("k").v.sum().to_dict())',
    'fig = plt.figure(figsize=(3, 2), dpi=100); plt.plot([1, 2]); plt.title(r"$\\alpha^2$ and text")',
    'for ext in ("png", "pdf", "svg"): fig.savefig(f"/tmp/f.{ext}")',
    'b = open("/tmp/f.png", "rb").read(24); print(matplotlib.get_backend(), b[:8] == b"\\x89PNG\\r\\n\\x1a\\n", int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big"))',
  ].join('\n');
  const r = spawnSync('chroot', [root, 'python3', '-c', py], { env });
  assert.equal(r.stderr.toString(), '');
  assert.equal(r.stdout.toString(), "[[7, 10], [15, 22]] [[1.0, 0.0], [0.0, 1.0]]\n{'x': 4, 'y': 2}\nagg True 300 200\n");
  // matplotlib used the pack's font cache: a rebuilt one would have this run's mtime.
  const cache = readdirSync(join(root, 'root/.cache/matplotlib'));
  assert.deepEqual(cache, ['fontlist-v330.json']);
  assert.equal(statSync(join(root, 'root/.cache/matplotlib', cache[0] as string)).mtimeMs, 0);
});
