// A spec's `files`: host files and directories copied into the pack tree. Modes are normalized
// (0755 if executable by the owner, else 0644; directories 0755; a file's `mode` wins) so that the
// pack does not depend on the host's umask or on what git kept (only the executable bit).

import { lstat, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { copyFileInRoot, mkdirInRoot, symlinkInRoot } from './root-path.ts';
import type { SpecFile } from './spec.ts';

const fileMode = (hostMode: number): number => ((hostMode & 0o100) !== 0 ? 0o755 : 0o644);

/** Copies one `files` entry into `root`; returns how many files (not directories) it wrote. */
export async function copyIntoRoot(root: string, f: SpecFile): Promise<number> {
  const st = await lstat(f.src);
  if (!st.isDirectory()) {
    await copyFileInRoot(root, f.src, f.dest, f.mode ?? fileMode(st.mode));
    return 1;
  }
  let n = 0;
  const visit = async (abs: string, dest: string): Promise<void> => {
    await mkdirInRoot(root, dest, 0o755);
    for (const name of (await readdir(abs)).sort()) {
      const a = join(abs, name);
      const d = posix.join(dest, name);
      const s = await lstat(a);
      if (s.isDirectory()) await visit(a, d);
      else if (s.isSymbolicLink()) await symlinkInRoot(root, await readlink(a), d);
      else if (s.isFile()) await copyFileInRoot(root, a, d, fileMode(s.mode));
      else continue; // sockets, fifos, devices: not something a spec copies
      n++;
    }
  };
  await visit(f.src, f.dest);
  return n;
}
