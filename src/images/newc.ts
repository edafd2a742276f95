// Deterministic writer (and reader, for tests and verification) of the "newc" cpio format the
// Linux kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//
// Determinism rules: entries sorted bytewise by path, parents always before children (missing
// parent directories are added with mode 0755), mtime 0, uid/gid 0, inode numbers 1..n in
// archive order, no hard links, header+name and data each padded to 4 bytes, "TRAILER!!!" last.

export type NewcEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; mode?: number; data: Uint8Array }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char' | 'block'; path: string; mode?: number; major: number; minor: number };

export interface ParsedNewcEntry {
  path: string;
  ino: number;
  mode: number; // full st_mode (type bits included)
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Buffer; // file contents or symlink target
  /** byte offset of this entry's header in the archive */
  offset: number;
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

const MAGIC = '070701';
const HEADER_LEN = 110;
const TRAILER = 'TRAILER!!!';

/** Normalises "/a//b/" to "a/b"; rejects "", ".", ".." components and NUL. */
export function normalizeArchivePath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '');
  if (parts.length === 0) throw new Error(`newc: empty path ${JSON.stringify(p)}`);
  for (const s of parts) {
    if (s === '.' || s === '..' || s.includes('\0')) {
      throw new Error(`newc: invalid path component in ${JSON.stringify(p)}`);
    }
  }
  return parts.join('/');
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`newc: field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

interface Normalized {
  path: string;
  mode: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Uint8Array;
}

function normalize(e: NewcEntry): Normalized {
  const path = normalizeArchivePath(e.path);
  const perm = (m: number | undefined, dflt: number): number => {
    const v = m ?? dflt;
    if ((v & ~0o7777) !== 0) throw new Error(`newc: ${path}: mode must be permission bits only, got 0o${v.toString(8)}`);
    return v;
  };
  switch (e.type) {
    case 'dir':
      return { path, mode: S_IFDIR | perm(e.mode, 0o755), nlink: 2, rdevMajor: 0, rdevMinor: 0, data: new Uint8Array(0) };
    case 'file':
      return { path, mode: S_IFREG | perm(e.mode, 0o644), nlink: 1, rdevMajor: 0, rdevMinor: 0, data: e.data };
    case 'symlink':
      if (e.target === '') throw new Error(`newc: ${path}: empty symlink target`);
      return { path, mode: S_IFLNK | 0o777, nlink: 1, rdevMajor: 0, rdevMinor: 0, data: Buffer.from(e.target, 'utf8') };
    case 'char':
    case 'block':
      return {
        path,
        mode: (e.type === 'char' ? S_IFCHR : S_IFBLK) | perm(e.mode, 0o600),
        nlink: 1,
        rdevMajor: e.major,
        rdevMinor: e.minor,
        data: new Uint8Array(0),
      };
  }
}

function header(ino: number, n: Normalized | null, nameLen: number): string {
  const fields = [
    ino,
    n?.mode ?? 0,
    0, // uid
    0, // gid
    n?.nlink ?? 1,
    0, // mtime
    n?.data.length ?? 0,
    0, // devmajor
    0, // devminor
    n?.rdevMajor ?? 0,
    n?.rdevMinor ?? 0,
    nameLen,
    0, // check
  ];
  return MAGIC + fields.map(hex8).join('');
}

/** Builds a complete newc archive. Input order does not matter; output is canonical. */
export function buildNewc(entries: readonly NewcEntry[]): Buffer {
  const byPath = new Map<string, Normalized>();
  for (const e of entries) {
    const n = normalize(e);
    if (byPath.has(n.path)) throw new Error(`newc: duplicate path ${n.path}`);
    byPath.set(n.path, n);
  }
  // Implicit parent directories.
  for (const p of [...byPath.keys()]) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const existing = byPath.get(parent);
      if (existing === undefined) {
        byPath.set(parent, normalize({ type: 'dir', path: parent }));
      } else if ((existing.mode & S_IFMT) !== S_IFDIR) {
        throw new Error(`newc: ${parent} is not a directory but has child ${p}`);
      }
    }
  }
  // Bytewise sort puts "a" before "a/b" ("a" is a prefix); "a-x" (0x2d) < "a/b" (0x2f) is harmless.
  const sorted = [...byPath.values()].sort((a, b) => compareBytes(a.path, b.path));

  const chunks: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    chunks.push(b);
    offset += b.length;
  };
  const pushEntry = (ino: number, n: Normalized | null, name: string): void => {
    const nameBuf = Buffer.from(name + '\0', 'utf8');
    push(Buffer.from(header(ino, n, nameBuf.length), 'ascii'));
    push(nameBuf);
    push(Buffer.alloc(pad4(HEADER_LEN + nameBuf.length)));
    if (n !== null && n.data.length > 0) {
      push(Buffer.from(n.data.buffer, n.data.byteOffset, n.data.length));
      push(Buffer.alloc(pad4(n.data.length)));
    }
  };
  let ino = 1;
  for (const n of sorted) pushEntry(ino++, n, n.path);
  pushEntry(0, null, TRAILER);
  return Buffer.concat(chunks, offset);
}

/** Parses a newc archive (up to and excluding the trailer). Strict: checks magic and padding. */
export function parseNewc(buf: Buffer): ParsedNewcEntry[] {
  const out: ParsedNewcEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + HEADER_LEN > buf.length) throw new Error(`newc: truncated header at ${off}`);
    const start = off;
    const magic = buf.toString('ascii', off, off + 6);
    if (magic !== MAGIC) throw new Error(`newc: bad magic ${JSON.stringify(magic)} at ${off}`);
    const f: number[] = [];
    for (let i = 0; i < 13; i++) {
      const s = buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(s)) throw new Error(`newc: bad hex field at ${off}`);
      f.push(parseInt(s, 16));
    }
    const [ino, mode, uid, gid, nlink, mtime, filesize, , , rdevMajor, rdevMinor, namesize] = f as [
      number, number, number, number, number, number, number, number, number, number, number, number, number,
    ];
    off += HEADER_LEN;
    if (namesize < 1 || off + namesize > buf.length) throw new Error(`newc: bad namesize at ${start}`);
    if (buf[off + namesize - 1] !== 0) throw new Error(`newc: name not NUL-terminated at ${start}`);
    const path = buf.toString('utf8', off, off + namesize - 1);
    off += namesize;
    const p1 = pad4(HEADER_LEN + namesize);
    for (let i = 0; i < p1; i++) if (buf[off + i] !== 0) throw new Error(`newc: non-zero padding at ${off}`);
    off += p1;
    if (path === TRAILER) return out;
    if (off + filesize > buf.length) throw new Error(`newc: truncated data for ${path}`);
    const data = buf.subarray(off, off + filesize);
    off += filesize;
    const p2 = pad4(filesize);
    for (let i = 0; i < p2; i++) if (buf[off + i] !== 0) throw new Error(`newc: non-zero padding at ${off}`);
    off += p2;
    out.push({ path, ino, mode, uid, gid, nlink, mtime, rdevMajor, rdevMinor, data, offset: start });
  }
}
