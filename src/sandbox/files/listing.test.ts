import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseListing, parseStatLine } from './listing.ts';
import { isEmberdError } from '../../errors.ts';

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

test('parseStatLine: a FIFO is "other", setuid bits stay in mode, no fraction is .000; garbage is FILE_OPERATION_FAILED', () => {
  assert.deepEqual(parseStatLine('11b6 0 1795897931 2026-11-28 20:32:11 +0000', 'p', '/root/p'),
    { name: 'p', path: '/root/p', type: 'other', size: 0, mode: '0666', mtime: '2026-11-28T20:32:11.000Z' });
  assert.equal(parseStatLine('89ed 1 1795897931 2026-11-28 20:32:11.5 +0000', 's', '/s').mode, '4755');
  assert.equal(parseStatLine('89ed 1 1795897931 2026-11-28 20:32:11.5 +0000', 's', '/s').mtime, '2026-11-28T20:32:11.500Z');
  assert.throws(() => parseStatLine('stat: no', 'x', '/x'), (e: unknown) => isEmberdError(e, 'FILE_OPERATION_FAILED'));
});
