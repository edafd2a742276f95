// Kernel helpers: vmlinux from bzImage (LZ4 payload), .modinfo parsing, module load order.

import { open, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './util.ts';

export const LZ4_LEGACY_MAGIC = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/**
 * Locates the compressed payload of an x86 bzImage. Uses the boot protocol fields
 * (setup_sects @0x1f1, payload_offset @0x248, payload_length @0x24c, protocol >= 2.08) and falls
 * back to searching for the LZ4 legacy magic. The last 4 bytes of the payload are the
 * little-endian uncompressed size that the kernel's build appends.
 */
export function findLz4Payload(bz: Buffer): { offset: number; length: number; uncompressedSize: number } {
  if (bz.length > 0x250 && bz.toString('ascii', 0x202, 0x206) === 'HdrS' && bz.readUInt16LE(0x206) >= 0x208) {
    const setupSects = bz[0x1f1] || 4;
    const offset = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
    const length = bz.readUInt32LE(0x24c);
    if (offset + length <= bz.length && bz.subarray(offset, offset + 4).equals(LZ4_LEGACY_MAGIC)) {
      return { offset, length, uncompressedSize: bz.readUInt32LE(offset + length - 4) };
    }
    if (offset + 4 <= bz.length && !bz.subarray(offset, offset + 4).equals(LZ4_LEGACY_MAGIC)) {
      throw new Error(
        `bzImage payload is not LZ4 (magic ${bz.subarray(offset, offset + 4).toString('hex')}); only LZ4 kernels are supported`,
      );
    }
  }
  const offset = bz.indexOf(LZ4_LEGACY_MAGIC);
  if (offset < 0) throw new Error('no LZ4 payload (magic 02 21 4c 18) in bzImage');
  const end = lz4LegacyEnd(bz, offset);
  const trailer = end + 4 <= bz.length ? bz.readUInt32LE(end) : 0;
  // The kernel build appends the uncompressed size right after the stream; take it if plausible.
  const uncompressedSize = trailer > end - offset ? trailer : -1;
  return { offset, length: uncompressedSize >= 0 ? end + 4 - offset : end - offset, uncompressedSize };
}

/** Legacy LZ4 blocks are at most 8 MiB uncompressed, so at most this compressed. */
const LZ4_LEGACY_MAX_BLOCK = 8 * 1024 * 1024 + Math.ceil((8 * 1024 * 1024) / 255) + 16;

/**
 * End offset of a legacy LZ4 stream (magic, then blocks of [u32 LE size][data]) starting at
 * `start`: stops at the first size word that cannot be a block (0, too big, past the end).
 */
export function lz4LegacyEnd(buf: Buffer, start: number): number {
  let off = start + 4;
  while (off + 4 <= buf.length) {
    const size = buf.readUInt32LE(off);
    if (size === 0 || size > LZ4_LEGACY_MAX_BLOCK || off + 4 + size > buf.length) break;
    off += 4 + size;
  }
  return off;
}

/** Decompresses the bzImage's LZ4 payload to `outPath` with the lz4 CLI; checks size and ELF magic. */
export async function extractVmlinux(bzImagePath: string, outPath: string): Promise<number> {
  const bz = await readFile(bzImagePath);
  const p = findLz4Payload(bz);
  // Strip the trailing size word when known (otherwise lz4 reads it as a next frame and exits 1).
  const input = bz.subarray(p.offset, p.offset + p.length - (p.uncompressedSize >= 0 ? 4 : 0));
  await run('lz4', ['-d', '-c', '-q'], { input, stdoutFile: outPath });
  const size = (await stat(outPath)).size;
  if (p.uncompressedSize >= 0 && size !== p.uncompressedSize) {
    throw new Error(`vmlinux: decompressed ${size} bytes, bzImage says ${p.uncompressedSize}`);
  }
  const fh = await open(outPath, 'r');
  try {
    const head = Buffer.alloc(5);
    await fh.read(head, 0, 5, 0);
    if (!head.subarray(0, 4).equals(ELF_MAGIC) || head[4] !== 2) throw new Error('vmlinux: not an ELF64 file');
  } finally {
    await fh.close();
  }
  return size;
}

/** Reads the NUL-separated key=value strings of an ELF64 LE object's .modinfo section. */
export function parseModinfo(ko: Buffer): Map<string, string[]> {
  if (!ko.subarray(0, 4).equals(ELF_MAGIC) || ko[4] !== 2 || ko[5] !== 1) throw new Error('not an ELF64 LE file');
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const shnum = ko.readUInt16LE(0x3c);
  const shstrndx = ko.readUInt16LE(0x3e);
  const sec = (i: number): { name: number; offset: number; size: number } => {
    const b = shoff + i * shentsize;
    return { name: ko.readUInt32LE(b), offset: Number(ko.readBigUInt64LE(b + 0x18)), size: Number(ko.readBigUInt64LE(b + 0x20)) };
  };
  const strtab = sec(shstrndx);
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    const nameEnd = ko.indexOf(0, strtab.offset + s.name);
    if (ko.toString('ascii', strtab.offset + s.name, nameEnd) !== '.modinfo') continue;
    for (const kv of ko.toString('utf8', s.offset, s.offset + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      out.set(k, [...(out.get(k) ?? []), kv.slice(eq + 1)]);
    }
    return out;
  }
  throw new Error('no .modinfo section');
}

export function moduleDepends(info: Map<string, string[]>): string[] {
  const d = info.get('depends')?.[0] ?? '';
  return d === '' ? [] : d.split(',').map((s) => s.replaceAll('-', '_'));
}

/**
 * Orders modules so dependencies load first, keeping the requested order otherwise. Throws if a
 * dependency is not in the set (the initramfs has no modules.dep to fall back on).
 */
export function moduleLoadOrder(requested: readonly string[], deps: ReadonlyMap<string, readonly string[]>): string[] {
  const out: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (m: string, chain: string[]): void => {
    const s = state.get(m);
    if (s === 'done') return;
    if (s === 'visiting') throw new Error(`module dependency cycle: ${[...chain, m].join(' -> ')}`);
    const d = deps.get(m);
    if (d === undefined) throw new Error(`module ${m} (needed by ${chain.at(-1) ?? 'request'}) is not in the initramfs module list`);
    state.set(m, 'visiting');
    for (const x of d) visit(x, [...chain, m]);
    state.set(m, 'done');
    out.push(m);
  };
  for (const m of requested) visit(m, []);
  return out;
}

/** Maps module name (underscored) -> path of its .ko under an extracted kernel package tree. */
export async function findModules(treeRoot: string, release: string): Promise<Map<string, string>> {
  let base: string | undefined;
  for (const cand of [join(treeRoot, 'lib/modules', release), join(treeRoot, 'usr/lib/modules', release)]) {
    try {
      if ((await stat(cand)).isDirectory()) {
        base = cand;
        break;
      }
    } catch {
      /* try next */
    }
  }
  if (base === undefined) throw new Error(`no lib/modules/${release} in the kernel package`);
  const out = new Map<string, string>();
  const rec = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await rec(p);
      else if (e.name.endsWith('.ko')) out.set(e.name.slice(0, -3).replaceAll('-', '_'), p);
    }
  };
  await rec(base);
  return out;
}
