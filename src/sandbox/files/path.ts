// Path rules of the files API: every path the API takes is absolute and normalized here, on the
// host, before it reaches a guest script (where it travels as an argv element, never as source).
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { EmberdError } from '../../errors.ts';

export const MAX_PATH_BYTES = 4096;

/**
 * An absolute, normalized path (posix rules: `.`/`..` resolved lexically, `..` at the root stays at
 * the root, repeated and trailing slashes dropped). Relative, empty, over-long or NUL-containing
 * paths are INVALID_PATH.
 */
export function normalizePath(p: unknown, what = 'path'): string {
  if (typeof p !== 'string' || p === '') throw new EmberdError('INVALID_PATH', `${what} is missing or empty; give an absolute path in the sandbox such as /root/data.csv`);
  if (p.includes('\0')) throw new EmberdError('INVALID_PATH', `${what} contains a NUL byte, which no file name can hold`);
  if (!p.startsWith('/')) throw new EmberdError('INVALID_PATH', `${what} "${p}" is relative; give an absolute path in the sandbox such as /root/${p}`);
  let n = posix.normalize(p);
  if (n.length > 1 && n.endsWith('/')) n = n.slice(0, -1);
  if (Buffer.byteLength(n) > MAX_PATH_BYTES) throw new EmberdError('INVALID_PATH', `${what} is longer than ${MAX_PATH_BYTES} bytes`);
  return n;
}

/** A fresh temporary name in `parent` for an upload, so that the rename over the target is atomic. */
export function uploadTempPath(parent: string): string {
  return posix.join(parent, `.emberd-upload-${randomBytes(8).toString('hex')}`);
}
