// The python pack twice from the same .debs: byte-identical squashfs. As root, also checks that
// the tree works (chroot into the unpacked image).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImages } from './build.ts';
import { buildTestsSkipReason, hashes, testDownloadsDir } from './testing.ts';

const skip = buildTestsSkipReason();
const base = mkdtempSync(join(tmpdir(), 'emberd-python-pack-test-'));
after(() => rmSync(base, { recursive: true, force: true }));

test('python pack is reproducible', { skip }, async () => {
  const downloadsDir = testDownloadsDir();
  const times: string[] = [];
  const results = [];
  for (const name of ['a', 'b']) {
    const t0 = performance.now();
    results.push(await buildImages({ dir: join(base, name), only: ['python'], downloadsDir }));
    times.push(`${((performance.now() - t0) / 1000).toFixed(1)}s`);
  }
  process.stderr.write(`# python pack builds: ${times.join(', ')}\n`);
  const [ra, rb] = results;
  assert.ok(ra !== undefined && rb !== undefined);
  assert.deepEqual(hashes(rb.manifest.files), hashes(ra.manifest.files));
  assert.deepEqual(Object.keys(ra.manifest.files).sort(), ['packs/python.json', 'packs/python.sqfs']);
  const pkgs = ra.manifest.inputs.packs['python']?.packages.map((p) => p.name) ?? [];
  assert.ok(pkgs.includes('python3.11') && pkgs.includes('busybox-static'));
  assert.ok(!pkgs.includes('dpkg') && !pkgs.includes('tar'), 'no Essential packages forced in');
});

const canChroot =
  process.getuid?.() === 0 && spawnSync('unsquashfs', ['-help']).error === undefined && spawnSync('chroot', ['--version']).error === undefined;

test(
  'python pack runs the stdlib and a shell (chroot)',
  { skip: skip || (!canChroot && 'needs root, chroot and unsquashfs') },
  () => {
    const image = join(base, 'a', 'packs/python.sqfs'); // built by the previous test
    const root = join(base, 'root');
    const x = spawnSync('unsquashfs', ['-q', '-n', '-d', root, image]);
    assert.equal(x.status, 0, x.stderr.toString());
    const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LC_ALL: 'C.UTF-8' };
    const py = spawnSync(
      'chroot',
      [
        root,
        '/usr/bin/python3',
        '-c',
        'import json,re,csv,sqlite3,decimal,datetime,statistics,urllib.request,ssl,zlib,hashlib,ctypes,lzma,bz2,subprocess;' +
          'ssl.create_default_context();' +
          'print(6*7, subprocess.run(["sh","-c","echo sub"],capture_output=True,text=True).stdout.strip())',
      ],
      { env },
    );
    assert.equal(py.error, undefined);
    assert.equal(py.stderr.toString(), '');
    assert.equal(py.stdout.toString(), '42 sub\n');
    const sh = spawnSync('chroot', [root, '/bin/sh', '-c', 'echo ok; cat /etc/emberd/interpreter'], { env });
    assert.equal(sh.stdout.toString(), 'ok\npython3\n-c\n');
  },
);
