// The shared-memory half of a QEMU golden snapshot (docs/snapshots.md, "Shared memory"): the
// guest's RAM as a plain file every clone maps copy-on-write, and the small migration stream
// (devices only, saved with x-ignore-shared) that goes with exactly that file.
//
//   <snapshot dir>/state.zst          the whole VM, RAM included: the fallback, and the source
//                                     the shared unit is (re)built from
//   <snapshot dir>/shared/memory      guest RAM, machine size, sparse (zero pages are holes)
//   <snapshot dir>/shared/state.zst   devices only; loads only against that memory file
//   <snapshot dir>/shared/unit.json   the sizes both had when written, checked before each use
//
// The file and its stream are one unit: they are written into shared.tmp-<pid>-<n>/ and renamed
// into place together, and a unit that fails a check is removed as a whole.
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const SHARED_DIR = 'shared';
export const SHARED_FILES = { memory: 'memory', stream: 'state.zst', unit: 'unit.json' } as const;

export interface SharedUnit { dir: string; memory: string; stream: string }

export function sharedPaths(snapshotDir: string, sub = SHARED_DIR): SharedUnit {
  const dir = join(snapshotDir, sub);
  return { dir, memory: join(dir, SHARED_FILES.memory), stream: join(dir, SHARED_FILES.stream) };
}

export function writeUnitRecord(u: SharedUnit): void {
  writeFileSync(join(u.dir, SHARED_FILES.unit), JSON.stringify({ memory_bytes: statSync(u.memory).size, stream_bytes: statSync(u.stream).size }));
}

/**
 * The snapshot's shared unit if it is whole: both files there with the sizes recorded when they
 * were written, and the memory file exactly the machine's size (QEMU refuses a shorter one, and a
 * longer one is not what was saved). Else why not, and nothing is returned.
 */
export function checkUnit(snapshotDir: string, memoryMib: number): { unit: SharedUnit } | { missing: boolean; why: string } {
  const u = sharedPaths(snapshotDir);
  if (!existsSync(u.dir)) return { missing: true, why: `${u.dir} does not exist` };
  try {
    const rec = JSON.parse(readFileSync(join(u.dir, SHARED_FILES.unit), 'utf8')) as { memory_bytes?: number; stream_bytes?: number };
    const mem = statSync(u.memory).size;
    const stream = statSync(u.stream).size;
    if (mem !== memoryMib * 1048576) return { missing: false, why: `${u.memory} has ${mem} bytes, the machine has ${memoryMib} MiB` };
    if (mem !== rec.memory_bytes || stream !== rec.stream_bytes) return { missing: false, why: `${u.dir} does not hold the files it was written with` };
    return { unit: u };
  } catch (e) {
    return { missing: false, why: `${u.dir} is incomplete: ${(e as Error).message}` };
  }
}

export function removeUnit(snapshotDir: string): void {
  rmSync(sharedPaths(snapshotDir).dir, { recursive: true, force: true });
}

/** Bytes the unit takes on disk: the memory file is sparse, so its allocated blocks, not its length. */
export function unitDiskBytes(u: SharedUnit): number {
  return statSync(u.memory).blocks * 512 + statSync(u.stream).size;
}
