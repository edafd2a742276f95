import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath, uploadTempPath } from './path.ts';
import { isEmberdError } from '../../errors.ts';

test('normalizePath: absolute, lexical .., no trailing slash; bad paths are INVALID_PATH', () => {
  for (const [input, want] of [
    ['/', '/'],
    ['/root/a.txt', '/root/a.txt'],
    ['/root//a/./b/', '/root/a/b'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/root/../..', '/'],
    ['//x', '/x'],
    ['/with space/and\nnewline', '/with space/and\nnewline'],
  ] as const) {
    assert.equal(normalizePath(input), want, JSON.stringify(input));
  }
  for (const bad of ['', 'root/a', './a', '.', '/a\0b', `/${'x'.repeat(5000)}`, undefined, 7]) {
    assert.throws(() => normalizePath(bad), (e: unknown) => isEmberdError(e, 'INVALID_PATH'), JSON.stringify(bad));
  }
});

test('uploadTempPath: a hidden name in the given directory, different each time', () => {
  const a = uploadTempPath('/root/d');
  assert.match(a, /^\/root\/d\/\.emberd-upload-[0-9a-f]{16}$/);
  assert.notEqual(uploadTempPath('/root/d'), a);
  assert.match(uploadTempPath('/'), /^\/\.emberd-upload-[0-9a-f]{16}$/);
});
