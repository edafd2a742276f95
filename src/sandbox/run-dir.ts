// Per-sandbox run directories. Unix socket paths are limited to 107 bytes, so the base must be short.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isSandboxId } from './ids.ts';

/**
 * Longest socket path a sandbox uses below its run dir: Firecracker's "/<sb_id>/firecracker.vsock_1024",
 * which a confined QEMU's "/<sb_id>/v<3 base36>/root/migrate.sock" exactly matches (src/vmm/qemu/jail.ts).
 */
const LONGEST_SUFFIX = '/sb_xxxxxxxxxxxxxxxxxxxx/firecracker.vsock_1024'.length;
const SUN_PATH_MAX = 107;

export function defaultRunBase(): string {
  if (process.getuid?.() === 0) return '/run/emberd';
  const xdg = process.env.XDG_RUNTIME_DIR;
  return xdg ? join(xdg, 'emberd') : `/tmp/emberd-${process.getuid?.() ?? 'user'}`;
}

export function checkRunBase(base: string): void {
  if (base.length + LONGEST_SUFFIX > SUN_PATH_MAX) {
    throw new Error(`run directory ${base} is too long for Unix socket paths (${base.length} bytes; at most ${SUN_PATH_MAX - LONGEST_SUFFIX}): pass a shorter --run-dir`);
  }
}

/**
 * Creates the base and removes sandbox directories a previous daemon left behind (their VMs died
 * with it: VMMs run with PDEATHSIG). Returns how many were removed.
 */
export function prepareRunBase(base: string): number {
  checkRunBase(base);
  mkdirSync(base, { recursive: true, mode: 0o700 });
  let removed = 0;
  for (const name of readdirSync(base)) {
    if (isSandboxId(name)) { rmSync(join(base, name), { recursive: true, force: true }); removed++; }
  }
  return removed;
}
