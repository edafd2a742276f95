// Shared helpers for the image builder's tests (not used at runtime).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveDownloadsDir } from './sources.ts';
import { defaultImagesDir } from './manifest.ts';

/**
 * The .deb cache the tests share with real builds: $EMBERD_IMAGES_DOWNLOADS, else
 * $EMBERD_IMAGES_DIR/downloads, else the default images dir's downloads. Once it holds the
 * packages, the tests run offline (apt resolution only reads the local apt lists).
 */
export function testDownloadsDir(): string {
  return resolveDownloadsDir(defaultImagesDir());
}

/** Why the build tests cannot run here, or false. */
export function buildTestsSkipReason(): string | false {
  for (const [cmd, args] of [
    ['apt-get', ['--version']],
    ['dpkg-deb', ['--version']],
    ['mksquashfs', ['-version']],
    ['lz4', ['--version']],
  ] as const) {
    if (spawnSync(cmd, args).error !== undefined) return `${cmd} not installed`;
  }
  const policy = spawnSync('apt-cache', ['policy', 'busybox-static', 'linux-image-cloud-amd64']).stdout?.toString() ?? '';
  if ((policy.match(/Candidate: (?!\(none\))/g) ?? []).length < 2) return 'apt lists lack Debian bookworm packages (apt-get update)';
  return false;
}

/** A stand-in /init: contents do not matter for reproducibility tests (nothing boots it). */
export function standInInit(): string {
  const dir = mkdtempSync(join(tmpdir(), 'emberd-init-standin-'));
  const p = join(dir, 'emberd-init');
  writeFileSync(p, '#!/bin/sh\n# stand-in for guest/build/emberd-init in image builder tests\nexec /bin/sh\n', { mode: 0o755 });
  return p;
}

export function hashes(files: Record<string, { sha256: string }>): Record<string, string> {
  return Object.fromEntries(Object.entries(files).map(([k, v]) => [k, v.sha256]));
}

/** ELF64 LE relocatable with sections: null, .modinfo, .shstrtab. */
export function fakeKo(modinfo: string): Buffer {
  const shstr = Buffer.from('\0.modinfo\0.shstrtab\0');
  const info = Buffer.from(modinfo);
  const infoOff = 64;
  const strOff = infoOff + info.length;
  const shoff = (strOff + shstr.length + 7) & ~7;
  const b = Buffer.alloc(shoff + 3 * 64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(b);
  b.writeBigUInt64LE(BigInt(shoff), 0x28);
  b.writeUInt16LE(64, 0x3a);
  b.writeUInt16LE(3, 0x3c);
  b.writeUInt16LE(2, 0x3e);
  info.copy(b, infoOff);
  shstr.copy(b, strOff);
  const sh = (i: number, name: number, off: number, size: number): void => {
    const o = shoff + i * 64;
    b.writeUInt32LE(name, o);
    b.writeUInt32LE(i === 2 ? 3 : 1, o + 4);
    b.writeBigUInt64LE(BigInt(off), o + 0x18);
    b.writeBigUInt64LE(BigInt(size), o + 0x20);
  };
  sh(1, 1, infoOff, info.length);
  sh(2, 10, strOff, shstr.length);
  return b;
}
