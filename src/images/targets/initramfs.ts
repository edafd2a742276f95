// Target `initramfs`: /init = emberd-init, the kernel modules it loads before it can mount a pack
// (flat in /lib/modules, with /lib/modules/load-order), the mount points; a deterministic newc
// archive, uncompressed (decompressing costs more boot time under TCG than reading 1 MiB).

import { readFile, writeFile } from 'node:fs/promises';
import type { AptPackage } from '../apt.ts';
import type { InitBinary } from '../init-binary.ts';
import { findModules, moduleDepends, moduleLoadOrder, parseModinfo } from '../kernel.ts';
import { formatLoadOrder } from '../load-order.ts';
import { INITRAMFS_REL } from '../manifest.ts';
import { buildNewc, type NewcEntry } from '../newc.ts';
import { debRecord, kernelRelease } from '../sources.ts';
import type { Step } from '../step-cache.ts';
import { formatBytes } from '../util.ts';

/** Modules copied (flat) into the initramfs /lib/modules, in load order. */
export const INITRAMFS_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_console',
  'virtio_blk',
  'squashfs',
  'overlay',
  'vsock',
  'vmw_vsock_virtio_transport_common',
  'vmw_vsock_virtio_transport',
  // eth0 of a sandbox created with `network` (docs/network.md, "Egress"); unused otherwise
  'failover',
  'net_failover',
  'virtio_net',
] as const;

/** Mount points etc. created in the initramfs. */
export const INITRAMFS_DIRS = ['dev', 'proc', 'sys', 'run', 'mnt', 'mnt/lower', 'mnt/upper', 'newroot', 'lib', 'lib/modules'] as const;

/** Bumped whenever this recipe changes its output (part of the step key). */
const INITRAMFS_RECIPE_VERSION = 2;

/**
 * @param kernel the kernel image package the modules come from
 * @param tree its files, extracted (shared with the kernel step)
 */
export function initramfsStep(kernel: AptPackage, tree: () => Promise<string>, init: InitBinary): Step {
  return {
    name: 'initramfs',
    label: 'initramfs',
    doing: 'newc, uncompressed',
    inputs: { recipe: INITRAMFS_RECIPE_VERSION, deb: debRecord(kernel), init: init.sha256, modules: INITRAMFS_MODULES, dirs: INITRAMFS_DIRS },
    outputs: [INITRAMFS_REL],
    async build(tmp, detail) {
      const r = await buildInitramfs(await tree(), kernelRelease(kernel), init.path);
      await writeFile(tmp(INITRAMFS_REL), r.archive);
      detail(`${formatBytes(r.archive.length)}, ${r.order.length} modules`);
      return (inputs) => {
        inputs.init = { sha256: init.sha256, size: init.size, source: init.source };
        inputs.initramfsModules = r.order;
      };
    },
  };
}

/** Builds the initramfs archive from an extracted kernel package and the init binary. */
export async function buildInitramfs(
  kernelTree: string,
  release: string,
  initPath: string,
  modules: readonly string[] = INITRAMFS_MODULES,
): Promise<{ archive: Buffer; order: string[] }> {
  const found = await findModules(kernelTree, release);
  const deps = new Map<string, string[]>();
  const data = new Map<string, Buffer>();
  for (const m of modules) {
    const p = found.get(m);
    if (p === undefined) throw new Error(`module ${m}.ko not found in the kernel package (built in, or compressed?)`);
    const buf = await readFile(p);
    data.set(m, buf);
    deps.set(m, moduleDepends(parseModinfo(buf)));
  }
  const order = moduleLoadOrder(modules, deps);
  const entries: NewcEntry[] = [
    ...INITRAMFS_DIRS.map((d): NewcEntry => ({ type: 'dir', path: d, mode: 0o755 })),
    { type: 'char', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
    { type: 'file', path: 'init', mode: 0o755, data: await readFile(initPath) },
    // Each module under its kernel name (a package's virtio-foo.ko becomes virtio_foo.ko), so a
    // load-order line plus ".ko" is its file name.
    ...order.map((m): NewcEntry => ({ type: 'file', path: `lib/modules/${m}.ko`, mode: 0o644, data: data.get(m) as Buffer })),
    // The guest agent loads the modules in this file's order (format: ../load-order.ts).
    { type: 'file', path: 'lib/modules/load-order', mode: 0o644, data: formatLoadOrder(order) },
  ];
  return { archive: buildNewc(entries), order };
}
