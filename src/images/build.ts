// `emberd images build`: kernel (vmlinux + bzImage), initramfs (emberd-init + modules) and
// language packs (squashfs), all from Debian packages, reproducibly, into the images dir.
//
// Under the images dir's lock: open its step cache (step-cache.ts), get emberd-init
// (init-binary.ts), resolve and download the Debian packages the asked-for targets are made of
// (sources.ts), then run each target's step (targets/) through the cache, which skips every step
// whose inputs are unchanged and whose outputs still hash right.

import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { AptPackage } from './apt.ts';
import { REPO_ROOT, prepareInit } from './init-binary.ts';
import type { Manifest } from './manifest.ts';
import { silentProgress, type Progress } from './progress.ts';
import { downloadPackages, lazyExtract, resolveDownloadsDir, resolvePackages } from './sources.ts';
import { StepCache, type Step, type StepOutcome } from './step-cache.ts';
import { initramfsStep } from './targets/initramfs.ts';
import { KERNEL_META_PACKAGE, kernelStep } from './targets/kernel.ts';
import { packStep, type PackSpec } from './targets/pack.ts';
import { NODE_PACK } from './targets/node-pack.ts';
import { PYTHON_DATA_PACK } from './targets/python-data-pack.ts';
import { PYTHON_PACK } from './targets/python-pack.ts';
import { SHELL_PACK } from './targets/shell-pack.ts';
import { acquireLock } from './util.ts';

const PACK_TARGETS = ['shell', 'python', 'node', 'python-data'] as const;
/** Everything `--only` can name, in build order. */
export const TARGETS = ['kernel', 'initramfs', ...PACK_TARGETS] as const;
export type ImageTarget = (typeof TARGETS)[number];

export const PACKS: Record<(typeof PACK_TARGETS)[number], PackSpec> = {
  shell: SHELL_PACK,
  python: PYTHON_PACK,
  node: NODE_PACK,
  'python-data': PYTHON_DATA_PACK,
};

export interface BuildOptions {
  dir: string;
  /** subset of targets; default all */
  only?: readonly ImageTarget[];
  /** rebuild even if up to date */
  force?: boolean;
  /** .deb cache; default $EMBERD_IMAGES_DOWNLOADS, else <dir>/downloads */
  downloadsDir?: string;
  /** use this emberd-init instead of running `make -C guest` (tests, prebuilt agents) */
  initBinary?: string;
  repoRoot?: string;
  kernelMetaPackage?: string;
  progress?: Progress;
}

export interface BuildResult {
  dir: string;
  manifest: Manifest;
  steps: StepOutcome[];
}

export async function buildImages(opts: BuildOptions): Promise<BuildResult> {
  const dir = resolve(opts.dir);
  const targets = new Set<ImageTarget>(opts.only ?? TARGETS);
  const progress = opts.progress ?? silentProgress;
  const kernelMeta = opts.kernelMetaPackage ?? KERNEL_META_PACKAGE;
  const packs = PACK_TARGETS.filter((t) => targets.has(t)).map((t) => PACKS[t]);
  const tmpRoot = join(dir, 'tmp');

  await mkdir(dir, { recursive: true });
  const unlock = await acquireLock(join(dir, '.lock'));
  // Directory modes of things created while building (e.g. __pycache__ by compileall) must not
  // depend on the caller's umask.
  const savedUmask = process.umask(0o022);
  try {
    await rm(tmpRoot, { recursive: true, force: true });
    await mkdir(tmpRoot, { recursive: true });
    const cache = await StepCache.open(dir, progress, opts.force === true);

    const init = targets.has('initramfs') ? await prepareInit(opts.initBinary, opts.repoRoot ?? REPO_ROOT, progress) : undefined;
    const needKernel = targets.has('kernel') || targets.has('initramfs');
    const resolved = await resolvePackages({ kernelMeta: needKernel ? kernelMeta : undefined, packs }, tmpRoot, progress);
    const deb = await downloadPackages(resolved, resolveDownloadsDir(dir, opts.downloadsDir), progress);

    const steps: Step[] = [];
    if (resolved.kernel !== undefined) {
      const kernelTree = lazyExtract(deb(resolved.kernel), join(tmpRoot, 'kernel-deb'));
      if (targets.has('kernel')) steps.push(kernelStep(resolved.kernel, kernelMeta, kernelTree));
      if (init !== undefined) steps.push(initramfsStep(resolved.kernel, kernelTree, init));
    }
    for (const spec of packs) steps.push(packStep(spec, resolved.packs.get(spec.name) as AptPackage[], deb, tmpRoot));
    for (const step of steps) await cache.run(step);

    return { dir, manifest: cache.manifest, steps: cache.outcomes };
  } finally {
    await rm(tmpRoot, { recursive: true, force: true }).catch(() => {});
    process.umask(savedUmask);
    await unlock();
  }
}
