// Per-VM cgroup v2: finding the hierarchy and what it offers (once, at start), making one cgroup
// per VM under <mount>/emberd with the limits its controllers allow, removing it when the VM is
// gone, and removing the empty ones a killed predecessor left. A host whose cgroup2 offers none
// of cpu/memory/pids (cgroup v1 hybrids, like the machines emberd is tested on) still gets the
// grouping (placement, accounting in cpu.stat, clean removal), just no limits; `missing` says so.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LIMIT_CONTROLLERS, type LimitController, type LimitFile } from './vm-limits.ts';

export interface CgroupHost {
  /** the cgroup2 mount, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified */
  mount: string;
  /** where per-VM cgroups are made: <mount>/emberd */
  parent: string;
  /** what the hierarchy's root offers (cgroup.controllers) */
  controllers: Set<string>;
  /** the limit controllers VMs get */
  limited: LimitController[];
  /** the limit controllers this host lacks */
  missing: LimitController[];
}

export type CgroupProbe = { host: CgroupHost; why?: undefined } | { host?: undefined; why: string };

export const CGROUP_PARENT = 'emberd';

/**
 * Where and how per-VM cgroups can be made. Pure over its inputs: /proc/mounts text, a reader
 * for cgroup.controllers, and whether emberd is root (making cgroups under the hierarchy's root
 * and moving processes into them needs root; delegation to a non-root daemon is not done).
 */
export function detectCgroups(procMounts: string, readControllers: (mount: string) => string | undefined, isRoot: boolean): CgroupProbe {
  const line = procMounts.split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2' && f[1]);
  if (!line) return { why: 'no cgroup2 hierarchy is mounted' };
  const mount = line[1]!.replace(/\\040/g, ' ');
  if ((line[3] ?? '').split(',').includes('ro')) return { why: `cgroup2 at ${mount} is mounted read-only` };
  if (!isRoot) return { why: 'emberd is not root: per-VM cgroups need root (delegating a cgroup subtree to a non-root emberd is not implemented)' };
  const text = readControllers(mount);
  if (text === undefined) return { why: `cannot read ${join(mount, 'cgroup.controllers')}` };
  const controllers = new Set(text.trim().split(/\s+/).filter(Boolean));
  return {
    host: {
      mount,
      parent: join(mount, CGROUP_PARENT),
      controllers,
      limited: LIMIT_CONTROLLERS.filter((c) => controllers.has(c)),
      missing: LIMIT_CONTROLLERS.filter((c) => !controllers.has(c)),
    },
  };
}

export function probeCgroups(isRoot = process.getuid?.() === 0): CgroupProbe {
  let mounts: string;
  try { mounts = readFileSync('/proc/mounts', 'utf8'); } catch { return { why: 'cannot read /proc/mounts' }; }
  return detectCgroups(mounts, (m) => { try { return readFileSync(join(m, 'cgroup.controllers'), 'utf8'); } catch { return undefined; } }, isRoot);
}

/** "memory, cpu, pids limits" or why there are none: for the backend's info. */
export function describeCgroups(p: CgroupProbe): string {
  if (!p.host) return `no per-VM cgroup (${p.why})`;
  const offered = [...p.host.controllers].join(' ') || 'none';
  return p.host.limited.length
    ? `cgroup v2 per VM under ${p.host.parent} (${p.host.limited.join(', ')} limits${p.host.missing.length ? `; ${p.host.missing.join(', ')} not offered` : ''})`
    : `cgroup v2 per VM under ${p.host.parent} without limits (cgroup2 at ${p.host.mount} offers ${offered}, not ${p.host.missing.join(', ')})`;
}

const enabled = new Set<string>();

/** Turns the limit controllers on for the children of <mount> and of the parent; once per parent. */
function enableControllers(host: CgroupHost): void {
  if (enabled.has(host.parent)) return;
  mkdirSync(host.parent, { recursive: true });
  for (const dir of [host.mount, host.parent]) {
    const on = new Set(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8').trim().split(/\s+/));
    for (const c of host.limited) if (!on.has(c)) writeFileSync(join(dir, 'cgroup.subtree_control'), `+${c}`);
  }
  enabled.add(host.parent);
}

export interface VmCgroup {
  dir: string;
  /** write a pid here to move that process in */
  procs: string;
  /** the limits written, for the backend's info and the tests */
  applied: LimitFile[];
}

/** Makes <parent>/<name> with the limits the host's controllers allow (a stale one of that name is replaced). */
export async function createVmCgroup(host: CgroupHost, name: string, limits: LimitFile[]): Promise<VmCgroup> {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(name) || name.startsWith('.')) throw new Error(`invalid cgroup name "${name}"`);
  enableControllers(host);
  const dir = join(host.parent, name);
  if (existsSync(dir)) await removeVmCgroup(dir);
  mkdirSync(dir);
  const applied = limits.filter((l) => host.limited.includes(l.controller));
  try {
    for (const l of applied) writeFileSync(join(dir, l.file), l.value);
  } catch (e) {
    await removeVmCgroup(dir).catch(() => {});
    throw e;
  }
  return { dir, procs: join(dir, 'cgroup.procs'), applied };
}

/** Removes the cgroup; it only empties once its processes are reaped, so EBUSY is retried for up to 2 s. */
export async function removeVmCgroup(dir: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || i >= 100) throw e;
      await sleep(20);
    }
  }
}

/**
 * Which empty cgroups to remove: this run base's (`ownPrefix`: a predecessor's, whose VMMs died
 * with it), and any of the VMM's `family` empty for a minute (its daemon was killed, e.g. a test
 * run; a live daemon's cgroup is empty only between its mkdir and the VMM joining, or between its
 * VM's end and the rmdir).
 */
export function isStaleCgroup(name: string, ageMs: number, ownPrefix: string, family: string): boolean {
  return name.startsWith(ownPrefix) || (name.startsWith(family) && ageMs > 60_000);
}

/**
 * Removes the empty cgroups under the parent that `stale(name, ageMs)` picks (a predecessor's:
 * its VMMs died with it). A cgroup that still holds a process is left alone (rmdir fails). Returns
 * how many.
 */
export function reapEmptyCgroups(host: CgroupHost, stale: (name: string, ageMs: number) => boolean): number {
  let names: string[];
  try { names = readdirSync(host.parent); } catch { return 0; }
  let n = 0;
  for (const name of names) {
    const dir = join(host.parent, name);
    try {
      const st = statSync(dir);
      if (!st.isDirectory() || !stale(name, Date.now() - st.mtimeMs)) continue;
      rmdirSync(dir);
      n++;
    } catch { /* busy (live) or gone */ }
  }
  return n;
}
