// File operations inside a sandbox, built on execs of the pack's busybox tools (scripts.ts): paths
// are checked on the host (path.ts), data travels through the exec's stdin/stdout under flow
// control (exec-streams.ts), failures come back as stable codes (errors.ts). No HTTP in here:
// sources and results are Node streams.
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { AgentClient, ExitInfo } from '../../agent/client.ts';
import { EmberdError } from '../../errors.ts';
import { fileError } from './errors.ts';
import { Capped, STDERR_CAP, streamFromExec, streamIntoExec } from './exec-streams.ts';
import { parseListing, parseStatLine, type FileStat } from './listing.ts';
import { parseMode } from './mode.ts';
import { normalizePath, uploadTempPath } from './path.ts';
import { DELETE, LIST_DIR, READ_FILE, READ_TAR, STAT_FORMAT, WRITE_FILE, WRITE_TAR, X_RACE, sh } from './scripts.ts';

export interface FileOpsOptions {
  /** Guest-side timeout of metadata operations (stat, list, delete, mkdir). */
  timeoutMs: number;
  /** Guest-side timeout of a whole transfer (upload, download, tar in either direction). */
  transferTimeoutMs: number;
  /** Largest listing/stat answer kept, in bytes. */
  outputCap: number;
}

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
    const tmp = uploadTempPath(posix.dirname(p));
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
   * Streams `source` into an exec of `argv` (streamIntoExec). More than maxBytes -> FILE_TOO_LARGE,
   * and `cleanup` (a temporary file) is removed; a failed tool -> its mapped code.
   */
  private async pipeIn(argv: string[], source: Readable, maxBytes: number, path: string, op: string, cleanup?: string): Promise<number> {
    const r = await streamIntoExec(this.agent, { argv, timeoutMs: this.opts.transferTimeoutMs }, source, {
      maxBytes,
      tooLarge: () => new EmberdError('FILE_TOO_LARGE', `the upload to ${path} is larger than this daemon accepts (${maxBytes} bytes); send less, or start emberd with a higher --max-upload`),
      cleanup: cleanup === undefined ? undefined : async () => {
        await this.agent.run({ argv: ['rm', '-f', '--', cleanup], timeoutMs: this.opts.timeoutMs }).catch(() => {});
      },
    });
    if (r.exit.exitCode !== 0 || r.exit.timedOut) throw fileError(path, r.exit, r.stderr, op);
    if (r.exitedEarly) throw new EmberdError('FILE_OPERATION_FAILED', `${op} ${path}: the guest stopped reading before the end of the data`);
    return r.bytes;
  }

  /** The stdout of an exec of `argv` as a stream (streamFromExec); a failed tool -> its mapped code. */
  private pipeOut(argv: string[], path: string, op: string, signal?: AbortSignal): Promise<Readable> {
    return streamFromExec(this.agent, { argv, timeoutMs: this.opts.transferTimeoutMs }, (exit, stderr) => fileError(path, exit, stderr, op), signal);
  }
}
