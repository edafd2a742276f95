// The guest agent that becomes the initramfs's /init: built with `make -C guest`, or a given
// binary (tests, prebuilt agents). Its sha256 is an input of the initramfs step.

import { stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256File, type InitInputs } from './manifest.ts';
import type { Progress } from './progress.ts';
import { formatBytes, run } from './util.ts';

/** The repository root (src/images/../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface InitBinary extends InitInputs {
  /** absolute path of the binary */
  path: string;
}

/** Builds (or takes `given`) and hashes emberd-init. */
export async function prepareInit(given: string | undefined, repoRoot: string, progress: Progress): Promise<InitBinary> {
  return progress.step(given !== undefined ? 'emberd-init' : 'emberd-init (make -C guest)', async (detail) => {
    let path: string;
    if (given !== undefined) {
      path = resolve(given);
    } else {
      const guest = join(repoRoot, 'guest');
      try {
        await stat(join(guest, 'Makefile'));
      } catch {
        throw new Error(`${guest}/Makefile not found: the guest agent must be built with \`make -C guest\` (or pass --init PATH)`);
      }
      await run('make', ['-C', guest]);
      path = join(guest, 'build', 'emberd-init');
    }
    const st = await stat(path).catch(() => null);
    if (st === null || !st.isFile()) throw new Error(`emberd-init not found at ${path}`);
    const sha256 = await sha256File(path);
    const rel = relative(repoRoot, path);
    detail(`${formatBytes(st.size)} sha256 ${sha256.slice(0, 12)}`);
    return { path, sha256, size: st.size, source: rel.startsWith('..') || isAbsolute(rel) ? path : rel };
  });
}
