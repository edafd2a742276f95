// A content digest of a host file or directory tree, for step keys: what the pack built from it
// depends on (paths, types, contents, link targets, and the mode bits that reach the pack), never
// mtimes or owners (the squashfs has neither: -all-time 0, -all-root).

import { createHash } from 'node:crypto';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from '../manifest.ts';

export type ModeBits =
  /** what a spec copy keeps: executable by its owner or not */
  | 'exec'
  /** what a rootfs import keeps: all permission bits, and hard links */
  | 'full';

/** sha256 over a sorted listing of `path` (a file: its content and mode alone). */
export async function treeDigest(path: string, bits: ModeBits): Promise<string> {
  const h = createHash('sha256');
  const inodes = new Map<string, string>();
  const visit = async (abs: string, rel: string): Promise<void> => {
    const st = await lstat(abs);
    const mode = bits === 'full' ? (st.mode & 0o7777).toString(8) : (st.mode & 0o100) !== 0 ? 'x' : '-';
    if (st.isDirectory()) {
      h.update(`d ${mode} ${rel}\0`);
      const names = (await readdir(abs)).sort();
      for (const n of names) await visit(join(abs, n), rel === '' ? n : `${rel}/${n}`);
    } else if (st.isSymbolicLink()) {
      h.update(`l ${rel}\0${await readlink(abs)}\0`);
    } else if (st.isFile()) {
      const inode = `${st.dev}:${st.ino}`;
      const first = bits === 'full' && st.nlink > 1 ? inodes.get(inode) : undefined;
      if (first !== undefined) {
        h.update(`h ${rel}\0${first}\0`);
        return;
      }
      if (st.nlink > 1) inodes.set(inode, rel);
      h.update(`f ${mode} ${rel}\0${await sha256File(abs)}\0`);
    } else {
      // devices, fifos, sockets: mksquashfs keeps them; their identity is the type and rdev
      h.update(`s ${mode} ${rel}\0${st.mode & 0o170000} ${st.rdev}\0`);
    }
  };
  await visit(path, '');
  return h.digest('hex');
}
