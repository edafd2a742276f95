// Unit tests of the pure parts of src/sandbox/files.ts: path rules, listing and stat parsing, error
// mapping. The end-to-end behaviour on real VMs is in test/e2e-files.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileError, normalizePath, parseListing } from './files.ts';
import { isEmberdError } from '../errors.ts';

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

test('parseListing: groups of NUL-terminated names, then one stat line each; any name survives', () => {
  const line = (rawHex: string, size: number) => `${rawHex} ${size} 1795897931 2026-11-28 20:32:11.117535246 +0000\n`;
  const out = Buffer.concat([
    Buffer.from('b file\0line\nbreak\0\0'), Buffer.from(line('81a4', 5) + line('81ed', 2)),
    Buffer.from('.hidden\0\0'), Buffer.from(line('41ed', 4096)),
    Buffer.from('..odd\0\0'), Buffer.from(line('a1ff', 3)),
  ]);
  const entries = parseListing(out, '/root/d');
  assert.deepEqual(entries.map((e) => [e.name, e.path, e.type, e.size, e.mode]), [
    ['..odd', '/root/d/..odd', 'symlink', 3, '0777'],
    ['.hidden', '/root/d/.hidden', 'dir', 4096, '0755'],
    ['b file', '/root/d/b file', 'file', 5, '0644'],
    ['line\nbreak', '/root/d/line\nbreak', 'file', 2, '0755'],
  ]);
  assert.equal(entries[0]!.mtime, '2026-11-28T20:32:11.117Z');
  assert.deepEqual(parseListing(Buffer.alloc(0), '/'), []);
  assert.throws(() => parseListing(Buffer.from('a\0\0'), '/'), (e: unknown) => isEmberdError(e, 'FILE_OPERATION_FAILED'));
});

test('fileError maps tool failures onto stable codes and keeps the tool\'s words', () => {
  const exit = (exitCode: number, timedOut = false) => ({ exitCode, timedOut });
  const cases: [number, string, string, string][] = [
    [1, "cat: can't open '/x': No such file or directory", 'download', 'FILE_NOT_FOUND'],
    [91, 'emberd: /x: Is a directory', 'download', 'IS_A_DIRECTORY'],
    [92, 'emberd: /x: Not a directory', 'upload', 'NOT_A_DIRECTORY'],
    [1, "sh: cd: line 0: can't cd to /x: Not a directory", 'list', 'NOT_A_DIRECTORY'],
    [1, "rmdir: '/x': Directory not empty", 'delete', 'DIRECTORY_NOT_EMPTY'],
    [1, 'cat: write error: No space left on device', 'upload', 'NO_SPACE'],
    [1, "mv: can't rename '/x/.t': File name too long", 'upload', 'INVALID_PATH'],
    [1, "sh: can't create /sys/.t: Permission denied", 'upload', 'PERMISSION_DENIED'],
    [1, "sh: line 7: can't create /proc/.t: nonexistent directory", 'upload', 'PERMISSION_DENIED'],
    [1, 'tar: invalid tar magic', 'tar upload', 'INVALID_TAR'],
    [1, 'something odd', 'upload', 'FILE_OPERATION_FAILED'],
  ];
  for (const [code, stderr, op, want] of cases) {
    const e = fileError('/x', exit(code), stderr, op);
    assert.equal(e.code, want, stderr);
    assert.ok(e.message.includes(stderr), e.message);
  }
  assert.equal(fileError('/x', exit(137, true), '', 'download').code, 'AGENT_TIMEOUT');
});
