// Target `shell`: busybox-static with every applet linked, and bash-static (the pack has no libc,
// so Debian's statically linked bash), nothing else.

import { addBaseFiles, installBusyboxApplets, pruneCommon } from '../packs.ts';
import { BASH_STATIC_PACKAGE, installBash } from './login-shell.ts';
import type { PackSpec } from './pack.ts';

export const SHELL_PACK: PackSpec = {
  name: 'shell',
  interpreter: ['sh', '-c'],
  roots: ['busybox-static'],
  // Without its dependencies: bash-static names passwd (PAM, libc) for its postinst's add-shell.
  extras: [BASH_STATIC_PACKAGE],
  async makeRoot(tree, detail) {
    await installBash(tree);
    detail(`busybox: ${await installBusyboxApplets(tree)} applets`);
    await pruneCommon(tree);
    await addBaseFiles(tree, SHELL_PACK);
  },
};
