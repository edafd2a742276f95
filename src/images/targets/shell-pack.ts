// Target `shell`: busybox-static with every applet linked, nothing else.

import { addBaseFiles, installBusyboxApplets, pruneCommon } from '../packs.ts';
import type { PackSpec } from './pack.ts';

export const SHELL_PACK: PackSpec = {
  name: 'shell',
  interpreter: ['sh', '-c'],
  roots: ['busybox-static'],
  extras: [],
  async makeRoot(tree, detail) {
    detail(`busybox: ${await installBusyboxApplets(tree)} applets`);
    await pruneCommon(tree);
    await addBaseFiles(tree, SHELL_PACK);
  },
};
