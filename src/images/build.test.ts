// Builds kernel + initramfs + shell pack twice from the same .debs and init, into two temp dirs:
// outputs must be byte-identical; a rebuild must skip everything; damage must be detected.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { buildImages } from './build.ts';
import { INITRAMFS_MODULES } from './targets/initramfs.ts';
import { ImagesError, loadImageSet, verifyImages } from './manifest.ts';
import { S_IFCHR, S_IFREG, parseNewc } from './newc.ts';
import { buildTestsSkipReason, hashes, standInInit, testDownloadsDir } from './testing.ts';

const skip = buildTestsSkipReason();
const base = mkdtempSync(join(tmpdir(), 'emberd-images-test-'));
const init = standInInit();
after(() => {
  rmSync(base, { recursive: true, force: true });
  rmSync(dirname(init), { recursive: true, force: true });
});

test('kernel, initramfs and shell pack: reproducible, cached on rebuild, verified', { skip }, async () => {
  const downloadsDir = testDownloadsDir();
  const a = join(base, 'a');
  const b = join(base, 'b');
  const opts = { only: ['kernel', 'initramfs', 'shell'] as const, downloadsDir, initBinary: init };

  let t0 = performance.now();
  const ra = await buildImages({ ...opts, dir: a });
  const tA = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const rb = await buildImages({ ...opts, dir: b });
  const tB = (performance.now() - t0) / 1000;
  assert.deepEqual(hashes(rb.manifest.files), hashes(ra.manifest.files));
  assert.deepEqual(Object.keys(ra.manifest.files).sort(), [
    'initramfs.cpio',
    'kernel/bzImage',
    'kernel/vmlinux',
    'packs/shell.json',
    'packs/shell.sqfs',
  ]);

  t0 = performance.now();
  const again = await buildImages({ ...opts, dir: a });
  const tCached = (performance.now() - t0) / 1000;
  assert.deepEqual(
    again.steps.map((s) => `${s.step}:${s.status}`),
    ['kernel:cached', 'initramfs:cached', 'pack:shell:cached'],
  );
  process.stderr.write(`# build a ${tA.toFixed(1)}s, build b ${tB.toFixed(1)}s, cached rebuild ${tCached.toFixed(1)}s\n`);

  // What the daemon sees.
  const set = loadImageSet(a);
  assert.equal(set.kernel, join(a, 'kernel/vmlinux'));
  assert.equal(readFileSync(set.kernel).subarray(0, 4).toString('latin1'), '\x7fELF');
  assert.match(set.kernelInfo.package, /^linux-image-.*-cloud-amd64$/);
  assert.deepEqual([...set.packs.keys()], ['shell']);
  assert.deepEqual(set.packs.get('shell')?.interpreter, ['sh', '-c']);
  assert.deepEqual(set.initramfsModules, [...INITRAMFS_MODULES]);

  // The initramfs holds what the guest agent expects.
  const entries = new Map(parseNewc(readFileSync(set.initramfs)).map((e) => [e.path, e]));
  assert.equal(entries.get('init')?.mode, S_IFREG | 0o755);
  assert.ok(entries.get('init')?.data.equals(readFileSync(init)));
  assert.equal(entries.get('dev/console')?.mode, S_IFCHR | 0o600);
  for (const d of ['proc', 'sys', 'run', 'mnt/lower', 'mnt/upper', 'newroot']) assert.ok(entries.has(d), d);
  for (const m of INITRAMFS_MODULES) {
    const ko = entries.get(`lib/modules/${m}.ko`);
    assert.ok(ko !== undefined && ko.data.subarray(0, 4).toString('latin1') === '\x7fELF', m);
  }
  assert.equal(entries.get('lib/modules/load-order')?.data.toString(), INITRAMFS_MODULES.map((m) => `${m}\n`).join(''));

  // The shell pack's layout.
  const ls = spawnSync('unsquashfs', ['-lls', join(a, 'packs/shell.sqfs')]);
  if (ls.status === 0) {
    const out = ls.stdout.toString();
    assert.match(out, /squashfs-root\/usr\/bin\/sh -> busybox/);
    assert.match(out, /squashfs-root\/bin -> usr\/bin/);
    assert.match(out, /drwxrwxrwt root\/root\s+\d+ 1970-01-01 00:00 squashfs-root\/tmp\n/);
    assert.match(out, /squashfs-root\/etc\/emberd\/interpreter/);
    assert.doesNotMatch(out, /usr\/share\/doc/);
  }

  // Damage is found by verify, rejected by the loader (size) and repaired by a rebuild.
  assert.deepEqual((await verifyImages(a)).problems, []);
  const sqfs = join(a, 'packs/shell.sqfs');
  const fd = openSync(sqfs, 'r+');
  writeSync(fd, Buffer.from('X'), 0, 1, 1000);
  closeSync(fd);
  assert.deepEqual(
    (await verifyImages(a)).problems.map((p) => `${p.file}:${p.problem}`),
    ['packs/shell.sqfs:sha256'],
  );
  const repaired = await buildImages({ ...opts, dir: a });
  assert.equal(repaired.steps.find((s) => s.step === 'pack:shell')?.status, 'built');
  assert.deepEqual((await verifyImages(a)).problems, []);
  truncateSync(sqfs, 4096);
  // A damaged pack is left out and said to be broken; the rest of the image set still loads.
  const damaged = loadImageSet(a);
  assert.equal(damaged.packs.has('shell'), false);
  assert.deepEqual(damaged.brokenPacks.map((b) => b.name), ['shell']);
  assert.match(damaged.brokenPacks[0]!.error, /has size 4096, the manifest says/);
  assert.throws(() => loadImageSet(join(base, 'nothing')), (e: unknown) => e instanceof ImagesError && e.code === 'IMAGES_NOT_BUILT');
});
