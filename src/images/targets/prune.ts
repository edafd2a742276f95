// Pruning helpers the pack recipes share beyond packs.ts's pruneCommon.

import { lstat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { lexists, walk } from '../util.ts';

/** Removes the regular files and symlinks under `root` (relative paths) that `match` picks. */
export async function removeFiles(root: string, match: (rel: string) => boolean): Promise<number> {
  if (!(await lexists(root))) return 0;
  let n = 0;
  for (const rel of await walk(root)) {
    if (!match(rel)) continue;
    if ((await lstat(join(root, rel))).isDirectory()) continue;
    await rm(join(root, rel), { force: true });
    n++;
  }
  return n;
}

/** Removes the directories under `root` whose relative path `match` picks, with their contents. */
export async function removeDirs(root: string, match: (rel: string) => boolean): Promise<number> {
  if (!(await lexists(root))) return 0;
  let n = 0;
  const gone: string[] = [];
  for (const rel of await walk(root)) {
    if (gone.some((g) => rel.startsWith(`${g}/`))) continue;
    if (!match(rel) || !(await lstat(join(root, rel))).isDirectory()) continue;
    await rm(join(root, rel), { recursive: true, force: true });
    gone.push(rel);
    n++;
  }
  return n;
}
