// A custom pack is built into the images dir the way `emberd images build` builds there (build.ts):
// under the same lock, with the same step cache (manifest.json), scratch space in <dir>/tmp and a
// fixed umask, so both commands can share one images dir and never see each other half-done.

import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Progress } from '../progress.ts';
import { StepCache } from '../step-cache.ts';
import { acquireLock } from '../util.ts';

export interface ImagesSession {
  dir: string;
  cache: StepCache;
  /** scratch space, removed afterwards */
  tmpRoot: string;
}

export async function withImagesDir<T>(dir: string, progress: Progress, force: boolean, fn: (s: ImagesSession) => Promise<T>): Promise<T> {
  dir = resolve(dir);
  const tmpRoot = join(dir, 'tmp');
  await mkdir(dir, { recursive: true });
  const unlock = await acquireLock(join(dir, '.lock'));
  const savedUmask = process.umask(0o022);
  try {
    await rm(tmpRoot, { recursive: true, force: true });
    await mkdir(tmpRoot, { recursive: true });
    const cache = await StepCache.open(dir, progress, force);
    return await fn({ dir, cache, tmpRoot });
  } finally {
    await rm(tmpRoot, { recursive: true, force: true }).catch(() => {});
    process.umask(savedUmask);
    await unlock();
  }
}
