import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileError } from './errors.ts';

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
