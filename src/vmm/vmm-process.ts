// Spawning a VMM process so that it does not outlive the daemon: through setpriv (util-linux) the
// child gets PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it when the daemon dies, even by
// SIGKILL (Node cannot set it itself). Without setpriv only a daemon that exits normally stops
// its VMMs; PDEATHSIG_WARNING says so, once, in the backend's warnings.
// A backend that confines its VMM puts wrapper commands between setpriv and the binary (`wrap`,
// each exec'ing the next: one process, still the daemon's child) and hands it extra fds.
import { spawn, type ChildProcess, type StdioNull, type StdioPipe } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { ConsoleBuffer } from './console-buffer.ts';

export const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** Set when VMMs cannot be tied to the daemon's life: what a user should know then. */
export const PDEATHSIG_WARNING: string | undefined = SETPRIV ? undefined
  : 'setpriv (util-linux) is not installed: a VMM is stopped when emberd exits or is stopped, but not when emberd is killed (SIGKILL, OOM); then its VM runs on until killed by hand (the next start removes its run dir). Install util-linux.';

export interface VmmProcess {
  child: ChildProcess;
  pid: number;
  console: ConsoleBuffer;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isRunning(): boolean;
}

export interface SpawnVmmOptions {
  cwd?: string;
  consoleLimit?: number;
  /** argv of wrapper commands run before the binary, e.g. `unshare ... --`; the last one execs it */
  wrap?: string[];
  /** the child's fds 3, 4, ...: an open fd of ours (duplicated), or 'pipe' (child.stdio[3 + i]) */
  extraFds?: (number | StdioPipe)[];
}

export function spawnVmm(binary: string, args: string[], opts: SpawnVmmOptions = {}): VmmProcess {
  const command = [...(opts.wrap ?? []), binary, ...args];
  const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', ...command]] : [command[0]!, command.slice(1)];
  const stdio: (StdioNull | StdioPipe | number)[] = ['ignore', 'pipe', 'pipe', ...(opts.extraFds ?? [])];
  const child = spawn(cmd, argv, { cwd: opts.cwd, stdio, detached: false });
  const console = new ConsoleBuffer(opts.consoleLimit);
  child.stdout!.on('data', (b: Buffer) => console.push(b));
  child.stderr!.on('data', (b: Buffer) => console.push(b));
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (e) => { running = false; console.push(Buffer.from(`\n[emberd] could not start ${binary}: ${e.message}\n`)); resolve({ code: null, signal: null }); });
    child.once('close', (code, signal) => { running = false; resolve({ code, signal }); });
  });
  return { child, pid: child.pid ?? -1, console, exited, isRunning: () => running };
}

/**
 * The one child of `pid` (a wrapper that forks the VMM, e.g. `unshare --fork`), or undefined while
 * it has none. Reads /proc/PID/task/PID/children.
 */
export function onlyChildOf(pid: number): number | undefined {
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return kids.length === 1 ? kids[0] : undefined;
  } catch {
    return undefined;
  }
}
