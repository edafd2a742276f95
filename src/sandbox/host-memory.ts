// How much memory the host can still give: MemAvailable of /proc/meminfo (the kernel's estimate of
// what new allocations can take without swapping), in MiB.
import { readFileSync } from 'node:fs';

export function memAvailableMib(meminfo = readFileSync('/proc/meminfo', 'utf8')): number {
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(meminfo);
  if (!m) throw new Error('/proc/meminfo has no MemAvailable line');
  return Math.floor(Number(m[1]) / 1024);
}
