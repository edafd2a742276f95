// Paths inside a root tree that came from someone else (an OCI image, a rootfs directory): its
// symlinks are resolved as the guest would see them, inside the tree, never through to the host
// (an image's /usr/local/bin -> /usr/bin must not make us write into the host's /usr/bin).

import { chmod, copyFile, lstat, mkdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

const MAX_LINKS = 40; // the kernel's limit for one path lookup

/**
 * The host path of `path` (absolute, as the guest sees it) inside `root`: every symlink on the way
 * is followed inside the tree (an absolute target starts again at `root`, `..` stops at it).
 * `followLast` false leaves a final symlink itself. Components that do not exist are kept as given.
 */
export async function resolveInRoot(root: string, path: string, followLast = true): Promise<string> {
  const todo = path.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let links = 0;
  let missing = false;
  while (todo.length > 0) {
    const c = todo.shift() as string;
    if (c === '..') {
      done.pop();
      continue;
    }
    if (!missing && (todo.length > 0 || followLast)) {
      const host = join(root, ...done, c);
      const st = await lstat(host).catch(() => null);
      if (st === null) {
        missing = true;
      } else if (st.isSymbolicLink()) {
        if (++links > MAX_LINKS) throw new Error(`${path}: too many levels of symbolic links inside ${root}`);
        const target = await readlink(host);
        if (target.startsWith('/')) done.length = 0;
        todo.unshift(...target.split('/').filter((t) => t !== '' && t !== '.'));
        continue;
      }
    }
    done.push(c);
  }
  return join(root, ...done);
}

/** What `path` is inside `root` after following its symlinks there (null: nothing). */
export async function statInRoot(root: string, path: string): Promise<import('node:fs').Stats | null> {
  return stat(await resolveInRoot(root, path)).catch(() => null);
}

/** mkdir -p of `dir` inside `root`; returns its host path. New directories get `mode`. */
export async function mkdirInRoot(root: string, dir: string, mode = 0o755): Promise<string> {
  const host = await resolveInRoot(root, dir);
  const existed = await stat(host).catch(() => null);
  if (existed !== null && !existed.isDirectory()) throw new Error(`${dir} exists in ${root} and is not a directory`);
  if (existed === null) {
    await mkdir(host, { recursive: true, mode });
    await chmod(host, mode);
  }
  return host;
}

/** The host path for writing `path` itself inside `root`: parents made, a file or link there removed. */
async function placeInRoot(root: string, path: string): Promise<string> {
  const parent = await mkdirInRoot(root, dirname(path));
  const host = join(parent, basename(path));
  const st = await lstat(host).catch(() => null);
  if (st?.isDirectory() === true) throw new Error(`${path} is a directory in ${root}`);
  if (st !== null) await rm(host, { force: true });
  return host;
}

export async function writeFileInRoot(root: string, path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const host = await placeInRoot(root, path);
  await writeFile(host, data);
  await chmod(host, mode);
}

export async function copyFileInRoot(root: string, src: string, path: string, mode: number): Promise<void> {
  const host = await placeInRoot(root, path);
  await copyFile(src, host);
  await chmod(host, mode);
}

export async function symlinkInRoot(root: string, target: string, path: string): Promise<void> {
  await symlink(target, await placeInRoot(root, path));
}
