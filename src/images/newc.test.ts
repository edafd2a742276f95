import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, buildNewc, normalizeArchivePath, parseNewc, type NewcEntry } from './newc.ts';

const sample: NewcEntry[] = [
  { type: 'file', path: '/init', mode: 0o755, data: Buffer.from('#!/bin/sh\necho hi\n') },
  { type: 'dir', path: 'dev' },
  { type: 'char', path: 'dev/console', major: 5, minor: 1 },
  { type: 'file', path: 'lib/modules/a.ko', data: Buffer.from('abc') }, // parents implied
  { type: 'file', path: 'lib/modules/empty', data: Buffer.alloc(0) },
  { type: 'symlink', path: 'bin', target: 'usr/bin' },
  { type: 'dir', path: 'tmp', mode: 0o1777 },
  { type: 'file', path: 'lib-x', data: Buffer.from('12345') }, // sorts between lib and lib/...
];

test('entries come out sorted with implied parents, sequential inodes and canonical metadata', () => {
  const entries = parseNewc(buildNewc(sample));
  assert.deepEqual(
    entries.map((e) => e.path),
    ['bin', 'dev', 'dev/console', 'init', 'lib', 'lib-x', 'lib/modules', 'lib/modules/a.ko', 'lib/modules/empty', 'tmp'],
  );
  assert.deepEqual(
    entries.map((e) => e.ino),
    entries.map((_, i) => i + 1),
  );
  for (const e of entries) {
    assert.equal(e.mtime, 0);
    assert.equal(e.uid, 0);
    assert.equal(e.gid, 0);
    assert.equal(e.offset % 4, 0, `${e.path} header is 4-byte aligned`);
  }
  const by = new Map(entries.map((e) => [e.path, e]));
  assert.equal(by.get('init')?.mode, S_IFREG | 0o755);
  assert.equal(by.get('init')?.data.toString(), '#!/bin/sh\necho hi\n');
  assert.equal(by.get('lib')?.mode, S_IFDIR | 0o755);
  assert.equal(by.get('lib')?.nlink, 2);
  assert.equal(by.get('tmp')?.mode, S_IFDIR | 0o1777);
  assert.equal(by.get('dev/console')?.mode, S_IFCHR | 0o600);
  assert.equal(by.get('dev/console')?.rdevMajor, 5);
  assert.equal(by.get('dev/console')?.rdevMinor, 1);
  assert.equal((by.get('bin')?.mode ?? 0) & S_IFMT, S_IFLNK);
  assert.equal(by.get('bin')?.data.toString(), 'usr/bin');
  assert.equal(by.get('lib/modules/a.ko')?.mode, S_IFREG | 0o644);
});

test('output is byte-identical regardless of input order and ends with a padded trailer', () => {
  const a = buildNewc(sample);
  const b = buildNewc([...sample].reverse());
  assert.ok(a.equals(b));
  assert.equal(a.length % 4, 0);
  const t = a.lastIndexOf('TRAILER!!!');
  assert.ok(t > 0);
  // trailer header: ino 0, mode 0, nlink 1, filesize 0, namesize 11
  const h = a.toString('ascii', t - 110, t);
  assert.equal(h.slice(0, 6), '070701');
  assert.equal(h.slice(6, 14), '00000000');
  assert.equal(h.slice(94, 102), '0000000b');
});

test('names and data are padded to 4 bytes with zeros (odd sizes)', () => {
  for (const size of [0, 1, 2, 3, 4, 5, 7]) {
    for (const name of ['a', 'ab', 'abc', 'abcd', 'abcde']) {
      const buf = buildNewc([{ type: 'file', path: name, data: Buffer.alloc(size, 0x41) }]);
      const [e] = parseNewc(buf); // strict parser rejects non-zero padding
      assert.equal(e?.data.length, size);
      assert.equal(buf.length % 4, 0);
    }
  }
});

test('rejects duplicates, bad paths, non-directory parents and mode type bits', () => {
  assert.throws(() => buildNewc([{ type: 'dir', path: 'a' }, { type: 'dir', path: '/a/' }]), /duplicate/);
  assert.throws(() => buildNewc([{ type: 'dir', path: '../a' }]), /invalid path/);
  assert.throws(() => buildNewc([{ type: 'dir', path: '/' }]), /empty path/);
  assert.throws(() => buildNewc([{ type: 'file', path: 'a', data: Buffer.from('x') }, { type: 'dir', path: 'a/b' }]), /not a directory/);
  assert.throws(() => buildNewc([{ type: 'file', path: 'a', mode: 0o100644, data: Buffer.from('x') }]), /permission bits/);
  assert.equal(normalizeArchivePath('//a//b/'), 'a/b');
});

test('GNU cpio lists and extracts the archive', { skip: spawnSync('cpio', ['--version']).status !== 0 ? 'cpio not installed' : false }, () => {
  const archive = buildNewc(sample.filter((e) => e.type !== 'char' || process.getuid?.() === 0));
  const list = spawnSync('cpio', ['-t', '--quiet'], { input: archive });
  assert.equal(list.status, 0, list.stderr.toString());
  assert.deepEqual(list.stdout.toString().trim().split('\n').sort(), parseNewc(archive).map((e) => e.path).sort());

  const dir = mkdtempSync(join(tmpdir(), 'newc-test-'));
  try {
    const x = spawnSync('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames'], { input: archive, cwd: dir });
    assert.equal(x.status, 0, x.stderr.toString());
    assert.equal(readFileSync(join(dir, 'init'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(lstatSync(join(dir, 'init')).mode & 0o7777, 0o755);
    assert.equal(readFileSync(join(dir, 'lib/modules/a.ko'), 'utf8'), 'abc');
    assert.equal(readlinkSync(join(dir, 'bin')), 'usr/bin');
    if (process.getuid?.() === 0) {
      const st = lstatSync(join(dir, 'dev/console'));
      assert.ok(st.isCharacterDevice());
      assert.equal(st.rdev, (5 << 8) | 1);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
