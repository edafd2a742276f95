// File operations inside a sandbox, built on execs of the pack's busybox tools (the guest agent has
// no file messages). Paths travel as separate argv elements, never inside shell source; file data
// travels through the exec's stdin/stdout under the protocol's flow control, so neither direction
// buffers a whole file on the host: an upload writes the next chunk only once the guest granted
// credit for it, and a download grants the guest credit only once the consumer took the bytes.
// No HTTP in here: sources and results are Node streams.
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import type { AgentClient, ExecHandle, ExitInfo } from '../agent/client.ts';
import { EmberdError, type ErrorCode } from '../errors.ts';

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

export interface FileOpsOptions {
  /** Guest-side timeout of metadata operations (stat, list, delete, mkdir). */
  timeoutMs: number;
  /** Guest-side timeout of a whole transfer (upload, download, tar in either direction). */
  transferTimeoutMs: number;
  /** Largest listing/stat answer kept, in bytes. */
  outputCap: number;
}

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

// ---- guest scripts: constant shell source, operands are "$1", "$2", ... ----------------------

/** Exit codes our scripts use for conditions the tools themselves would not report clearly. */
const X_IS_DIR = 91;
const X_NOT_DIR = 92;
const X_RACE = 95;

/** $1 path: the bytes of a regular file (anything but a directory) on stdout. */
const READ_FILE = `[ -d "$1" ] && { echo "emberd: $1: Is a directory" >&2; exit ${X_IS_DIR}; }
exec cat -- "$1"`;

/**
 * $1 final path, $2 its parent, $3 temporary file in the parent, $4 mode ('' = keep the replaced
 * file's mode, else 0644). stdin is written to $3, which is renamed over $1 only when complete:
 * readers never see a partial file and a failed upload leaves the old file (if any) untouched.
 */
const WRITE_FILE = `[ -d "$1" ] && { echo "emberd: $1: Is a directory" >&2; exit ${X_IS_DIR}; }
if ! [ -d "$2" ]; then
  if [ -e "$2" ]; then echo "emberd: $2: Not a directory" >&2; exit ${X_NOT_DIR}; fi
  mkdir -p -- "$2" || exit 1
fi
m=$4
if [ -z "$m" ]; then if [ -f "$1" ]; then m=$(stat -L -c %a -- "$1"); else m=0644; fi; fi
cat > "$3" && chmod "$m" "$3" && mv -f -- "$3" "$1" && exit 0
s=$?; rm -f -- "$3"; exit $s`;

/** $1 directory: a tar stream of its contents (entries relative to it) on stdout. */
const READ_TAR = `cd -- "$1" || exit 1
exec tar -c -f - .`;

/** $1 directory (created with its parents if missing): stdin is a tar stream extracted into it. */
const WRITE_TAR = `if ! [ -d "$1" ]; then
  if [ -e "$1" ]; then echo "emberd: $1: Not a directory" >&2; exit ${X_NOT_DIR}; fi
  mkdir -p -- "$1" || exit 1
fi
exec tar -x -f - -C "$1"`;

/** One stat line per operand, in order: raw mode (hex), size, mtime (s), mtime (with ns). */
const STAT_FORMAT = '%f %s %Y %y';

/**
 * $1 directory. For each of the three globs that together match every entry but . and ..: the
 * names, each NUL-terminated, an empty name (a lone NUL) and then one stat line per name. Names
 * cannot hold NUL, and stat lines do not hold names, so any name (newlines included) is parsed
 * unambiguously. One stat process per glob (xargs splits huge directories), not one per entry.
 */
const LIST_DIR = `cd -- "$1" || exit 1
for p in '*' '.[!.]*' '..?*'; do
  set -- $p
  if [ "$#" -eq 1 ] && ! [ -e "$1" ] && ! [ -L "$1" ]; then continue; fi
  printf '%s\\0' "$@"
  printf '\\0'
  printf '%s\\0' "$@" | xargs -0 stat -c '${STAT_FORMAT}' -- || exit ${X_RACE}
done`;

/** $1 path, $2 "1" for recursive. A symlink is removed itself, never what it points to. */
const DELETE = `if [ -d "$1" ] && ! [ -L "$1" ]; then
  if [ "$2" = 1 ]; then exec rm -rf -- "$1"; else exec rmdir -- "$1"; fi
fi
exec rm -- "$1"`;

const sh = (script: string, ...args: string[]): string[] => ['sh', '-c', script, 'sh', ...args];

// ---- errors ----------------------------------------------------------------------------------

/** Maps a failed tool run onto a stable code; the tool's own words go into the message. */
export function fileError(path: string, exit: Pick<ExitInfo, 'exitCode' | 'timedOut'>, stderr: string, op: string): EmberdError {
  const said = stderr.trim().split('\n').slice(-3).join('; ').slice(0, 500);
  const detail = said ? ` (${said})` : '';
  if (exit.timedOut) return new EmberdError('AGENT_TIMEOUT', `${op} ${path} did not finish in time and was stopped${detail}`);
  const is = (re: RegExp) => re.test(stderr);
  let code: ErrorCode;
  let msg: string;
  if (exit.exitCode === X_IS_DIR || is(/Is a directory/)) {
    code = 'IS_A_DIRECTORY';
    msg = `${path} is a directory; ${op === 'download' ? 'download a directory with format=tar' : op === 'upload' ? 'give the path of the file itself, or upload a tar with format=tar' : 'use a directory operation'}`;
  } else if (exit.exitCode === X_NOT_DIR || is(/Not a directory/)) {
    code = 'NOT_A_DIRECTORY';
    msg = `${path}, or one of its parents, is not a directory`;
  } else if (is(/No such file or directory/)) {
    code = 'FILE_NOT_FOUND';
    msg = `${path} does not exist in the sandbox`;
  } else if (is(/Directory not empty/)) {
    code = 'DIRECTORY_NOT_EMPTY';
    msg = `${path} is a directory that is not empty; pass recursive=true to delete it with everything in it`;
  } else if (is(/No space left on device|Disk quota exceeded/)) {
    code = 'NO_SPACE';
    msg = `the sandbox's filesystem is full while writing ${path}; delete files in the sandbox or write less`;
  } else if (is(/File name too long/)) {
    code = 'INVALID_PATH';
    msg = `${path} has a name longer than the sandbox's filesystem allows (255 bytes per name)`;
  } else if (is(/Permission denied|Operation not permitted|Read-only file system|nonexistent directory/)) {
    // ("nonexistent directory" is ash refusing to create a file in an existing directory whose
    // filesystem cannot hold new files, such as /proc: our scripts create missing parents first.)
    code = 'PERMISSION_DENIED';
    msg = `${op} ${path} is not permitted in the sandbox`;
  } else if (op.startsWith('tar') && is(/tar: /)) {
    code = 'INVALID_TAR';
    msg = `the tar stream for ${path} could not be extracted; send an uncompressed POSIX/ustar or GNU tar`;
  } else {
    code = 'FILE_OPERATION_FAILED';
    msg = `${op} ${path} failed in the sandbox with status ${exit.exitCode}`;
  }
  return new EmberdError(code, msg + detail);
}

// ---- helpers ---------------------------------------------------------------------------------

/** Keeps the first `cap` bytes of a stream of chunks (stderr of our tools: small). */
class Capped {
  private readonly parts: Buffer[] = [];
  private n = 0;
  truncated = false;
  private readonly cap: number;
  constructor(cap: number) { this.cap = cap; }
  push(b: Buffer): void {
    const room = this.cap - this.n;
    if (b.length > room) this.truncated = true;
    if (room <= 0) return;
    const part = b.length > room ? b.subarray(0, room) : b;
    this.parts.push(part);
    this.n += part.length;
  }
  buffer(): Buffer { return Buffer.concat(this.parts); }
  toString(): string { return this.buffer().toString('utf8'); }
}

const STDERR_CAP = 16 * 1024;

/**
 * Output credit granted to a download's guest process on top of the protocol's initial 256 KiB, so
 * that up to 1 MiB is in flight: the guest keeps sending while the daemon is busy or descheduled
 * (about +25% download throughput under TCG on a loaded host). Memory per download stays bounded:
 * this plus ExecOutput's high-water mark.
 */
const EXTRA_DOWNLOAD_CREDIT = 768 * 1024;

/** The exec's outcome without rejecting: a transport failure is carried as `error`. */
type Outcome = { exit: ExitInfo; error?: undefined } | { exit?: undefined; error: Error };
const outcome = (h: ExecHandle): Promise<Outcome> => h.exited.then((exit) => ({ exit }), (error: Error) => ({ error }));

/**
 * Output of an exec as a Readable. Credit goes back to the guest only while this stream's buffer is
 * below its high-water mark, i.e. as fast as the consumer reads: a slow reader slows the guest
 * process instead of growing host memory (at most highWaterMark + the window in flight: 2 MiB).
 */
class ExecOutput extends Readable {
  handle: ExecHandle | undefined;
  private owed = 0;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  deliver(chunk: Buffer): void {
    this.owed += chunk.length;
    if (this.push(chunk)) this.credit();
  }

  private credit(): void {
    if (this.owed > 0 && this.handle) {
      this.handle.grant(this.owed);
      this.owed = 0;
    }
  }

  override _read(): void {
    this.credit();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // The consumer went away (client disconnected) or the exec failed: stop the guest process.
    if (this.handle && !this.handle.settled) this.handle.signal(9);
    cb(err);
  }
}

function tmpName(parent: string): string {
  return posix.join(parent, `.emberd-upload-${randomBytes(8).toString('hex')}`);
}

function parseMode(mode: string | number | undefined): string | undefined {
  if (mode === undefined) return undefined;
  const n = typeof mode === 'number' ? mode : /^[0-7]{1,5}$/.test(mode) ? parseInt(mode, 8) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 0o7777) throw new EmberdError('INVALID_REQUEST', `mode "${mode}" is not a file mode; give octal permission bits such as 0644 or 0755`);
  return n.toString(8).padStart(4, '0');
}

// ---- stat parsing ----------------------------------------------------------------------------

const STAT_LINE = /^([0-9a-f]+) (\d+) (\d+) (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4})$/;

function typeOf(rawMode: number): FileType {
  switch (rawMode & 0o170000) {
    case 0o100000: return 'file';
    case 0o040000: return 'dir';
    case 0o120000: return 'symlink';
    default: return 'other';
  }
}

function parseStatLine(line: string, name: string, path: string): FileStat {
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

// ---- the operations --------------------------------------------------------------------------

export interface WriteOptions {
  /** Octal string ("0755") or number; default: the replaced file's mode, else 0644. */
  mode?: string | number;
  /** Bytes accepted before FILE_TOO_LARGE. */
  maxBytes: number;
}

export class SandboxFiles {
  private readonly agent: AgentClient;
  private readonly opts: FileOpsOptions;

  constructor(agent: AgentClient, opts: FileOpsOptions) {
    this.agent = agent;
    this.opts = opts;
  }

  /** Runs a metadata command to completion; throws the mapped error on a non-zero status. */
  private async run(argv: string[], path: string, op: string, okCodes: number[] = [0]): Promise<{ stdout: Buffer; exit: ExitInfo }> {
    const out = new Capped(this.opts.outputCap);
    const err = new Capped(STDERR_CAP);
    const h = this.agent.exec({ argv, timeoutMs: this.opts.timeoutMs }, { onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) });
    const exit = await h.exited;
    if (!okCodes.includes(exit.exitCode) || exit.timedOut) throw fileError(path, exit, err.toString(), op);
    if (out.truncated) throw new EmberdError('FILE_OPERATION_FAILED', `the answer for ${path} is larger than ${this.opts.outputCap} bytes (the daemon's --exec-output-cap)`);
    return { stdout: out.buffer(), exit };
  }

  async stat(path: string): Promise<FileStat> {
    const p = normalizePath(path);
    const { stdout } = await this.run(['stat', '-c', STAT_FORMAT, '--', p], p, 'stat');
    return parseStatLine(stdout.toString('latin1').replace(/\n$/, ''), p === '/' ? '/' : posix.basename(p), p);
  }

  async list(path: string): Promise<FileStat[]> {
    const p = normalizePath(path);
    // An entry that vanishes between the glob and its stat makes the listing inconsistent: retry.
    for (let attempt = 1; ; attempt++) {
      const { stdout, exit } = await this.run(sh(LIST_DIR, p), p, 'list', [0, X_RACE]);
      if (exit.exitCode === 0) return parseListing(stdout, p);
      if (attempt === 3) throw new EmberdError('FILE_OPERATION_FAILED', `the directory ${p} kept changing while it was listed; try again`);
    }
  }

  async delete(path: string, recursive = false): Promise<void> {
    const p = normalizePath(path);
    if (p === '/') throw new EmberdError('INVALID_PATH', 'refusing to delete /; delete the files in it instead');
    await this.run(sh(DELETE, p, recursive ? '1' : '0'), p, 'delete');
  }

  /** Streams `source` into the file at `path` (see WRITE_FILE). Resolves with the bytes written. */
  async writeFile(path: string, source: Readable, o: WriteOptions): Promise<{ path: string; size: number }> {
    const p = normalizePath(path);
    if (p === '/') throw new EmberdError('IS_A_DIRECTORY', '/ is a directory; give the path of the file itself');
    const mode = parseMode(o.mode) ?? '';
    const tmp = tmpName(posix.dirname(p));
    const size = await this.pipeIn(sh(WRITE_FILE, p, posix.dirname(p), tmp, mode), source, o.maxBytes, p, 'upload', tmp);
    return { path: p, size };
  }

  /** Streams a tar from `source` into directory `path` (created if missing). Not atomic. */
  async writeTar(path: string, source: Readable, o: { maxBytes: number }): Promise<{ path: string; size: number }> {
    const p = normalizePath(path);
    const size = await this.pipeIn(sh(WRITE_TAR, p), source, o.maxBytes, p, 'tar upload');
    return { path: p, size };
  }

  /**
   * The bytes of a file. Resolves once the first bytes (or the end) arrived: errors come first.
   * `signal` aborts the read before the stream is handed out (a client gone while a FIFO blocks);
   * afterwards, destroying the stream does.
   */
  readFile(path: string, o: { signal?: AbortSignal } = {}): Promise<Readable> {
    const p = normalizePath(path);
    return this.pipeOut(sh(READ_FILE, p), p, 'download', o.signal);
  }

  /** A directory as a tar stream (entries relative to the directory, `./...`). */
  readTar(path: string, o: { signal?: AbortSignal } = {}): Promise<Readable> {
    const p = normalizePath(path);
    return this.pipeOut(sh(READ_TAR, p), p, 'tar download', o.signal);
  }

  /**
   * Writes `source` to the stdin of an exec of `argv`, one chunk at a time: each write waits for
   * the guest's credit, and the next chunk is only read from `source` after that, so a slow guest
   * slows the sender. More than maxBytes -> FILE_TOO_LARGE; the process is killed and `cleanup`
   * (a temporary file) removed. `source` is never destroyed here: the caller may still answer on
   * the connection it belongs to.
   */
  private async pipeIn(argv: string[], source: Readable, maxBytes: number, path: string, op: string, cleanup?: string): Promise<number> {
    const err = new Capped(STDERR_CAP);
    const h = this.agent.exec(
      { argv, stdinOpen: true, timeoutMs: this.opts.transferTimeoutMs },
      { onStderr: (b) => err.push(b) },
    );
    const ended = outcome(h);
    let total = 0;
    let exitedEarly = false;
    try {
      for await (const raw of source.iterator({ destroyOnReturn: false })) {
        const chunk = typeof raw === 'string' ? Buffer.from(raw) : raw as Buffer;
        total += chunk.length;
        if (total > maxBytes) {
          throw new EmberdError('FILE_TOO_LARGE', `the upload to ${path} is larger than this daemon accepts (${maxBytes} bytes); send less, or start emberd with a higher --max-upload`);
        }
        const r = await Promise.race([h.writeStdin(chunk).then(() => undefined), ended]);
        if (r) { exitedEarly = true; break; } // the tool stopped before reading everything: its status says why
      }
      if (!exitedEarly) h.closeStdin();
    } catch (e) {
      h.signal(9);
      await ended;
      if (cleanup) await this.agent.run({ argv: ['rm', '-f', '--', cleanup], timeoutMs: this.opts.timeoutMs }).catch(() => {});
      throw e;
    }
    const r = await ended;
    if (r.error) throw r.error;
    if (r.exit.exitCode !== 0 || r.exit.timedOut) throw fileError(path, r.exit, err.toString(), op);
    if (exitedEarly) throw new EmberdError('FILE_OPERATION_FAILED', `${op} ${path}: the guest stopped reading before the end of the data`);
    return total;
  }

  /**
   * Runs `argv` and hands its stdout out as a stream, with credit granted as the consumer reads.
   * Waits for the first bytes or the end before resolving, so a failure before any output (no
   * such file, a directory) rejects with its code; a failure later destroys the stream.
   */
  private pipeOut(argv: string[], path: string, op: string, signal?: AbortSignal): Promise<Readable> {
    const stream = new ExecOutput();
    const err = new Capped(STDERR_CAP);
    return new Promise<Readable>((resolve, reject) => {
      let started = false;
      const start = () => { if (!started) { started = true; resolve(stream); } };
      let h: ExecHandle;
      try {
        h = this.agent.exec({ argv, timeoutMs: this.opts.transferTimeoutMs }, {
          manualCredit: true,
          onStdout: (b) => { stream.deliver(b); start(); },
          // stderr is small and kept, so its credit goes back at once
          onStderr: (b) => { err.push(b); h.grant(b.length); },
        });
      } catch (e) {
        reject(e);
        return;
      }
      stream.handle = h;
      h.grant(EXTRA_DOWNLOAD_CREDIT);
      const abort = () => { if (!started) h.signal(9); };
      signal?.addEventListener('abort', abort, { once: true });
      if (signal?.aborted) abort();
      void outcome(h).then((r) => {
        signal?.removeEventListener('abort', abort);
        const failure = r.error ?? (r.exit.exitCode !== 0 || r.exit.timedOut ? fileError(path, r.exit, err.toString(), op) : undefined);
        if (!failure) {
          stream.push(null);
          start();
        } else if (!started) {
          started = true;
          stream.destroy();
          reject(failure);
        } else {
          stream.destroy(failure);
        }
      });
    });
  }
}
