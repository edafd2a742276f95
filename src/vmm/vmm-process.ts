// Spawning a VMM process so that it does not outlive the daemon: through setpriv (util-linux) the
// child gets PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it when the daemon dies, even by
// SIGKILL (Node cannot set it itself). Without setpriv only a daemon that exits normally stops
// its VMMs; PDEATHSIG_WARNING says so, once, in the backend's warnings.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { ConsoleBuffer } from './console-buffer.ts';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

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

export function spawnVmm(binary: string, args: string[], opts: { cwd?: string; consoleLimit?: number } = {}): VmmProcess {
  const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', binary, ...args]] : [binary, args];
  const child = spawn(cmd, argv, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: false });
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
