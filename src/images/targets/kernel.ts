// Target `kernel`: Debian's cloud kernel as shipped (kernel/bzImage) and the uncompressed ELF cut
// out of it (kernel/vmlinux: QEMU boots it through PVH, Firecracker accepts only ELF).

import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AptPackage } from '../apt.ts';
import { extractVmlinux } from '../kernel.ts';
import { BZIMAGE_REL, VMLINUX_REL } from '../manifest.ts';
import { debRecord, kernelRelease } from '../sources.ts';
import type { Step } from '../step-cache.ts';
import { formatBytes } from '../util.ts';

export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

/** Bumped whenever this recipe changes its outputs (part of the step key). */
const KERNEL_RECIPE_VERSION = 1;

/**
 * @param pkg the real image package `meta` resolved to
 * @param tree the package's files, extracted (shared with the initramfs step)
 */
export function kernelStep(pkg: AptPackage, meta: string, tree: () => Promise<string>): Step {
  const release = kernelRelease(pkg);
  return {
    name: 'kernel',
    label: `kernel ${release}`,
    doing: 'vmlinux + bzImage',
    inputs: { recipe: KERNEL_RECIPE_VERSION, deb: debRecord(pkg) },
    outputs: [VMLINUX_REL, BZIMAGE_REL],
    async build(tmp, detail) {
      await copyFile(join(await tree(), 'boot', `vmlinuz-${release}`), tmp(BZIMAGE_REL));
      const size = await extractVmlinux(tmp(BZIMAGE_REL), tmp(VMLINUX_REL));
      detail(`vmlinux ${formatBytes(size)}`);
      return (inputs) => {
        inputs.kernel = { meta, package: pkg.name, version: pkg.version, release, debSha256: pkg.sha256 };
      };
    },
  };
}
