// Spawning a VMM process so that it can never outlive the daemon: with setpriv available the
// child gets PR_SET_PDEATHSIG=SIGKILL (the kernel kills it if the daemon dies, even by SIGKILL).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { ConsoleBuffer } from './console-buffer.ts';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

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
