import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extractVmlinux, findLz4Payload, moduleDepends, moduleLoadOrder, parseModinfo } from './kernel.ts';
import { fakeKo } from './testing.ts';

const haveLz4 = spawnSync('lz4', ['--version']).status === 0;

/** A fake "vmlinux": ELF64 magic + compressible junk. */
function fakeElf(size: number): Buffer {
  const b = Buffer.alloc(size);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(b);
  for (let i = 64; i < size; i++) b[i] = (i * 7) % 251 < 40 ? i & 0xff : 0;
  return b;
}

function lz4Legacy(data: Buffer): Buffer {
  const r = spawnSync('lz4', ['-l', '-c', '-q'], { input: data, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

/** Minimal bzImage: boot protocol 2.15 header + LZ4 payload with the kernel's trailing size word. */
function fakeBzImage(vmlinux: Buffer, opts: { header: boolean }): Buffer {
  const setupSects = 3;
  const payloadOffset = 200;
  const payload = Buffer.concat([lz4Legacy(vmlinux), Buffer.alloc(4)]);
  payload.writeUInt32LE(vmlinux.length, payload.length - 4);
  const start = (setupSects + 1) * 512 + payloadOffset;
  const bz = Buffer.alloc(start + payload.length + 300, 0);
  if (opts.header) {
    bz[0x1f1] = setupSects;
    bz.write('HdrS', 0x202, 'ascii');
    bz.writeUInt16LE(0x020f, 0x206);
    bz.writeUInt32LE(payloadOffset, 0x248);
    bz.writeUInt32LE(payload.length, 0x24c);
  }
  payload.copy(bz, start);
  return bz;
}

test('vmlinux is extracted from the LZ4 payload located by the boot header', { skip: !haveLz4 && 'lz4 not installed' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kernel-test-'));
  try {
    const vm = fakeElf(300_000);
    const bz = fakeBzImage(vm, { header: true });
    const p = findLz4Payload(bz);
    assert.equal(p.offset, 4 * 512 + 200);
    assert.equal(p.uncompressedSize, vm.length);
    writeFileSync(join(dir, 'bzImage'), bz);
    const size = await extractVmlinux(join(dir, 'bzImage'), join(dir, 'vmlinux'));
    assert.equal(size, vm.length);
    assert.ok(readFileSync(join(dir, 'vmlinux')).equals(vm));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without a usable boot header the LZ4 magic is searched for', { skip: !haveLz4 && 'lz4 not installed' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kernel-test-'));
  try {
    const vm = fakeElf(100_000);
    const bz = fakeBzImage(vm, { header: false });
    assert.equal(findLz4Payload(bz).uncompressedSize, vm.length);
    bz.fill(0, findLz4Payload(bz).offset + findLz4Payload(bz).length - 4); // no size trailer either
    assert.equal(findLz4Payload(bz).uncompressedSize, -1);
    writeFileSync(join(dir, 'bzImage'), bz);
    assert.equal(await extractVmlinux(join(dir, 'bzImage'), join(dir, 'vmlinux')), vm.length);
    assert.ok(readFileSync(join(dir, 'vmlinux')).equals(vm));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a non-ELF payload or a non-LZ4 kernel is refused', { skip: !haveLz4 && 'lz4 not installed' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kernel-test-'));
  try {
    writeFileSync(join(dir, 'bzImage'), fakeBzImage(Buffer.alloc(5000, 1), { header: true }));
    await assert.rejects(extractVmlinux(join(dir, 'bzImage'), join(dir, 'vmlinux')), /not an ELF64/);
    const bz = fakeBzImage(fakeElf(1000), { header: true });
    bz.writeUInt32LE(0x184d2204, 4 * 512 + 200); // LZ4 frame (not legacy) magic
    assert.throws(() => findLz4Payload(bz), /not LZ4/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('.modinfo is parsed and depends= drives the load order', () => {
  const info = parseModinfo(fakeKo('license=GPL\0depends=virtio,virtio-ring\0alias=x\0alias=y\0name=virtio_blk\0'));
  assert.deepEqual(info.get('alias'), ['x', 'y']);
  assert.deepEqual(moduleDepends(info), ['virtio', 'virtio_ring']);
  assert.deepEqual(moduleDepends(parseModinfo(fakeKo('depends=\0'))), []);
  assert.throws(() => parseModinfo(Buffer.from('not elf at all, really')), /ELF64/);

  const deps = new Map<string, string[]>([
    ['virtio_ring', []],
    ['virtio', ['virtio_ring']],
    ['virtio_blk', ['virtio', 'virtio_ring']],
    ['vsock', []],
    ['vmw_vsock_virtio_transport', ['virtio', 'vmw_vsock_virtio_transport_common', 'virtio_ring', 'vsock']],
    ['vmw_vsock_virtio_transport_common', ['vsock']],
  ]);
  assert.deepEqual(moduleLoadOrder(['virtio_blk', 'vmw_vsock_virtio_transport'], deps), [
    'virtio_ring',
    'virtio',
    'virtio_blk',
    'vsock',
    'vmw_vsock_virtio_transport_common',
    'vmw_vsock_virtio_transport',
  ]);
  assert.throws(() => moduleLoadOrder(['a'], new Map([['a', ['b']]])), /b \(needed by a\)/);
  assert.throws(
    () =>
      moduleLoadOrder(
        ['a'],
        new Map([
          ['a', ['b']],
          ['b', ['a']],
        ]),
      ),
    /cycle/,
  );
});
