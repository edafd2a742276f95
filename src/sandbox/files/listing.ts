// Parsing what the guest's stat (STAT_FORMAT) and directory listing (LIST_DIR) print into the
// files API's FileStat entries.
import { posix } from 'node:path';
import { EmberdError } from '../../errors.ts';

export type FileType = 'file' | 'dir' | 'symlink' | 'other';

export interface FileStat {
  name: string;
  path: string;
  type: FileType;
  size: number;
  /** Permission bits (incl. setuid/setgid/sticky) as 4 octal digits, e.g. "0644". */
  mode: string;
  /** Last modification, ISO-8601 UTC with milliseconds. */
  mtime: string;
}

const STAT_LINE = /^([0-9a-f]+) (\d+) (\d+) (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4})$/;

function typeOf(rawMode: number): FileType {
  switch (rawMode & 0o170000) {
    case 0o100000: return 'file';
    case 0o040000: return 'dir';
    case 0o120000: return 'symlink';
    default: return 'other';
  }
}

/** One STAT_FORMAT line (no newline) of the entry `name` at `path`. */
export function parseStatLine(line: string, name: string, path: string): FileStat {
  const m = STAT_LINE.exec(line);
  if (!m) throw new EmberdError('FILE_OPERATION_FAILED', `unexpected stat output for ${path}: ${JSON.stringify(line.slice(0, 200))}`);
  const raw = parseInt(m[1]!, 16);
  const seconds = Number(m[3]);
  const ms = m[6] ? Number(m[6].padEnd(3, '0').slice(0, 3)) : 0;
  return {
    name,
    path,
    type: typeOf(raw),
    size: Number(m[2]),
    mode: (raw & 0o7777).toString(8).padStart(4, '0'),
    mtime: new Date(seconds * 1000 + ms).toISOString(),
  };
}

/** Parses LIST_DIR output: groups of NUL-terminated names, an empty name, then as many stat lines. */
export function parseListing(out: Buffer, dir: string): FileStat[] {
  const entries: FileStat[] = [];
  let pos = 0;
  while (pos < out.length) {
    const names: string[] = [];
    for (;;) {
      const end = out.indexOf(0, pos);
      if (end < 0) throw new EmberdError('FILE_OPERATION_FAILED', `unexpected listing output for ${dir}`);
      const name = out.subarray(pos, end);
      pos = end + 1;
      if (name.length === 0) break;
      names.push(name.toString('utf8'));
    }
    for (const name of names) {
      const end = out.indexOf(0x0a, pos);
      if (end < 0) throw new EmberdError('FILE_OPERATION_FAILED', `the listing of ${dir} ended early`);
      entries.push(parseStatLine(out.subarray(pos, end).toString('latin1'), name, posix.join(dir, name)));
      pos = end + 1;
    }
  }
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
