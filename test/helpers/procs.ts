// Host process scans for leak checks: which processes are alive (zombies do not count), found by a
// word of their command line.
import { readdirSync, readFileSync } from 'node:fs';

/** The state letter of /proc/PID/stat (R, S, Z, ...), or undefined when the process is gone. */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0];
  } catch {
    return undefined;
  }
}

/** True while `pid` exists and is not a zombie. */
export function isLive(pid: number): boolean {
  const s = processState(pid);
  return s !== undefined && s !== 'Z';
}

/** Pids of live processes whose command line (NUL-separated argv) contains `needle`. */
export function liveProcessesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const pid = Number(p);
    if (pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(needle) && isLive(pid)) pids.push(pid);
    } catch { /* gone meanwhile */ }
  }
  return pids;
}

/** Resident set size of `pid` in KiB. */
export function rssKib(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** Live descendants of `pid` (children, their children, ...). */
export function liveDescendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      parent.set(Number(p), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone meanwhile */ }
  }
  const out: number[] = [];
  const walk = (of: number) => { for (const [child, pp] of parent) if (pp === of) { if (isLive(child)) out.push(child); walk(child); } };
  walk(pid);
  return out;
}

/** Live VMM processes (QEMU, Firecracker) below `pid`. */
export function vmmsBelow(pid: number): number[] {
  return liveDescendants(pid).filter((p) => {
    try { return /^(qemu-system|firecracker)/.test(readFileSync(`/proc/${p}/comm`, 'utf8')); } catch { return false; }
  });
}
