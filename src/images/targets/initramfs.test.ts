// The initramfs's /lib/modules: the .ko files and load-order, the file the guest agent loads the
// modules by (format: ../load-order.ts). Built from a fake kernel package tree; no apt needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatLoadOrder } from '../load-order.ts';
import { parseNewc } from '../newc.ts';
import { fakeKo } from '../testing.ts';
import { buildInitramfs } from './initramfs.ts';

const RELEASE = '6.1.0-0-test-amd64';

/** A kernel package tree with these modules (file name -> .modinfo depends=) in two subdirs. */
function fakeKernelTree(root: string, modules: Record<string, string>): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (const [i, [file, depends]] of Object.entries(modules).entries()) {
    const dir = join(root, 'lib/modules', RELEASE, 'kernel', i % 2 === 0 ? 'drivers' : 'fs');
    mkdirSync(dir, { recursive: true });
    const ko = fakeKo(`license=GPL\0depends=${depends}\0name=${file.replaceAll('-', '_')}\0`);
    writeFileSync(join(dir, `${file}.ko`), ko);
    files.set(file, ko);
  }
  return files;
}

test('load-order: one module name per line, dependencies first, each naming the .ko beside it', async () => {
  const root = mkdtempSync(join(tmpdir(), 'initramfs-test-'));
  try {
    const ko = fakeKernelTree(root, {
      ring: '',
      'virt-io': 'ring', // a package file name with '-': the kernel's name has '_'
      blk: 'virt_io,ring',
      sqfs: '',
    });
    writeFileSync(join(root, 'init'), '#!/bin/sh\n');
    // Asked for out of dependency order: load-order puts dependencies first, else keeps this order.
    const r = await buildInitramfs(root, RELEASE, join(root, 'init'), ['blk', 'sqfs', 'virt_io', 'ring']);
    assert.deepEqual(r.order, ['ring', 'virt_io', 'blk', 'sqfs']);

    const entries = new Map(parseNewc(r.archive).map((e) => [e.path, e]));
    const text = entries.get('lib/modules/load-order')?.data.toString('latin1');
    assert.equal(text, 'ring\nvirt_io\nblk\nsqfs\n');
    const lines = (text ?? '').split('\n').slice(0, -1); // every line ends with "\n", the last one too
    assert.deepEqual(lines, r.order);
    const koFiles = [...entries.keys()].filter((p) => p.startsWith('lib/modules/') && p.endsWith('.ko'));
    assert.deepEqual(koFiles.sort(), lines.map((m) => `lib/modules/${m}.ko`).sort(), 'every .ko is listed, once');
    assert.ok(entries.get('lib/modules/virt_io.ko')?.data.equals(ko.get('virt-io') as Buffer));
    assert.ok(entries.get('lib/modules/blk.ko')?.data.equals(ko.get('blk') as Buffer));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('load-order: names that would break the format are refused, not written', () => {
  assert.equal(formatLoadOrder(['virtio_ring', 'vmw_vsock_virtio_transport']).toString(), 'virtio_ring\nvmw_vsock_virtio_transport\n');
  assert.equal(formatLoadOrder([]).toString(), '');
  assert.equal(formatLoadOrder(['m'.repeat(55)]).length, 56);
  for (const bad of ['', 'a\nb', 'a/b', 'virtio-ring', ' a', 'a.ko', 'm'.repeat(56)]) {
    assert.throws(() => formatLoadOrder([bad]), /cannot be written/, JSON.stringify(bad));
  }
  assert.throws(() => formatLoadOrder(['a', 'b', 'a']), /listed twice/);
});
