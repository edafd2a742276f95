// What an imported root lacks for the files API (a distroless or scratch image has no sh, cat,
// tar...), filled in from Debian's busybox-static: the binary in /usr/local/emberd/bin, and a link
// on the guest's PATH (/usr/local/bin) for each missing tool only, so the image's own tools, where
// it has them, are the ones that run. /bin/sh too if absent (system(3) and popen(3) exec it).

import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { extractDeb } from '../apt.ts';
import { lexists } from '../util.ts';
import { copyFileInRoot, statInRoot, symlinkInRoot } from './root-path.ts';

export const BUSYBOX_DEB = 'busybox-static';
export const EMBERD_BUSYBOX = '/usr/local/emberd/bin/busybox';

/** Adds busybox for `missing` tools; returns the pack paths it added. */
export async function addBusyboxTools(root: string, busyboxDeb: string, missing: readonly string[], scratch: string): Promise<string[]> {
  const tmp = await mkdtemp(join(scratch, 'busybox-'));
  try {
    await extractDeb(busyboxDeb, tmp);
    const bin = [join(tmp, 'bin/busybox'), join(tmp, 'usr/bin/busybox')];
    const found = (await lexists(bin[0] as string)) ? bin[0] : (await lexists(bin[1] as string)) ? bin[1] : undefined;
    if (found === undefined) throw new Error(`${busyboxDeb} has no busybox binary`);
    await copyFileInRoot(root, found, EMBERD_BUSYBOX, 0o755);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const added = [EMBERD_BUSYBOX];
  for (const tool of missing) {
    await symlinkInRoot(root, EMBERD_BUSYBOX, `/usr/local/bin/${tool}`);
    added.push(`/usr/local/bin/${tool}`);
  }
  if ((await statInRoot(root, '/bin/sh')) === null) {
    await symlinkInRoot(root, EMBERD_BUSYBOX, '/bin/sh');
    added.push('/bin/sh');
  }
  return added;
}
