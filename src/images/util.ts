// Small process/file helpers for the image builder (node built-ins only).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, open, readFile, readdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';

export class CommandError extends Error {
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(command: string, exitCode: number | null, signal: string | null, stderr: string) {
    const tail = stderr.trim().split('\n').slice(-15).join('\n');
    const shown = command.length > 160 ? `${command.slice(0, 157)}...` : command;
    super(`${shown} failed (${signal !== null ? `signal ${signal}` : `exit ${exitCode}`})${tail ? `:\n${tail}` : ''}`);
    this.name = 'CommandError';
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** written to stdin, then stdin is closed */
  input?: Uint8Array;
  /** write stdout to this file instead of capturing it */
  stdoutFile?: string;
  /** exit codes treated as success (default [0]) */
  okCodes?: number[];
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
  code: number;
}

function quote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`;
}

export function commandLine(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(quote).join(' ');
}

/** Runs a command without a shell; rejects with CommandError on failure. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let fileDone: Promise<void> = Promise.resolve();
    if (opts.stdoutFile !== undefined) {
      fileDone = pipeline(child.stdout, createWriteStream(opts.stdoutFile));
    } else {
      child.stdout.on('data', (d: Buffer) => out.push(d));
    }
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.stdin.on('error', () => {}); // EPIPE if the child exits early; the exit code tells
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
    child.on('error', (e) => reject(new Error(`cannot run ${cmd}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      fileDone.then(
        () => {
          const stderr = Buffer.concat(err).toString('utf8');
          const ok = opts.okCodes ?? [0];
          if (code === null || !ok.includes(code)) {
            reject(new CommandError(commandLine(cmd, args), code, signal, stderr));
          } else {
            resolvePromise({ stdout: Buffer.concat(out), stderr, code });
          }
        },
        (e: unknown) => reject(e as Error),
      );
    });
  });
}

/** `a | b` without a shell. Both must succeed. */
export function runPipe(
  a: [string, readonly string[]],
  b: [string, readonly string[]],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const env = opts.env ?? process.env;
    const pa = spawn(a[0], a[1], { cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const pb = spawn(b[0], b[1], { cwd: opts.cwd, env, stdio: ['pipe', 'ignore', 'pipe'] });
    pa.stdout.pipe(pb.stdin);
    pb.stdin.on('error', () => {});
    const errA: Buffer[] = [];
    const errB: Buffer[] = [];
    pa.stderr.on('data', (d: Buffer) => errA.push(d));
    pb.stderr.on('data', (d: Buffer) => errB.push(d));
    let pending = 2;
    let failed: Error | null = null;
    const done = (which: 'a' | 'b', code: number | null, signal: string | null): void => {
      if (failed === null && code !== 0) {
        const [cmd, args] = which === 'a' ? a : b;
        failed = new CommandError(commandLine(cmd, args), code, signal, Buffer.concat(which === 'a' ? errA : errB).toString('utf8'));
      }
      if (--pending === 0) {
        if (failed !== null) reject(failed);
        else resolvePromise();
      }
    };
    pa.on('error', (e) => reject(new Error(`cannot run ${a[0]}: ${e.message}`, { cause: e })));
    pb.on('error', (e) => reject(new Error(`cannot run ${b[0]}: ${e.message}`, { cause: e })));
    pa.on('close', (code, signal) => done('a', code, signal));
    pb.on('close', (code, signal) => done('b', code, signal));
  });
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Stable JSON: object keys sorted recursively (for hashing step inputs). */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export function tempName(path: string): string {
  return join(dirname(path), `.${path.split('/').pop() ?? 'out'}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
}

/** Writes via a temp file in the same directory + fsync + rename. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tempName(path);
  try {
    const fh = await open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** fsyncs a finished temp file and renames it into place. */
export async function commitFile(tmp: string, path: string): Promise<void> {
  const fh = await open(tmp, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** Exclusive lock on a directory via an O_EXCL pid file; stale locks (dead pid) are taken over. */
export async function acquireLock(lockPath: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lockPath, `${process.pid}\n`, { flag: 'wx' });
      return async () => {
        await unlink(lockPath).catch(() => {});
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
      let alive = false;
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (err) {
          alive = (err as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      if (alive) throw new Error(`another \`emberd images build\` (pid ${pid}) is using ${dirname(lockPath)}`);
      await unlink(lockPath).catch(() => {});
    }
  }
  throw new Error(`cannot lock ${lockPath}`);
}

/** Whether `p` exists, not following a symlink there (a dangling link exists). */
export async function lexists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** Recursive listing (relative paths, sorted), not following symlinks. */
export async function walk(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(join(root, rel), { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = rel === '' ? e.name : `${rel}/${e.name}`;
    out.push(p);
    if (e.isDirectory()) out.push(...(await walk(root, p)));
  }
  return out;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
