// Target `node`: Debian bookworm's Node.js (node 18 on the shared libnode, system ICU, OpenSSL and
// libuv; its unbundled JS dependencies from /usr/share/nodejs), busybox for /bin/sh and the usual
// tools, bash, a CA bundle. No npm (a separate package, and sandboxes reach no registry), no
// TypeScript declarations, source maps or docs.

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { addBaseFiles, installBusyboxApplets, installCaBundle, pruneCommon } from '../packs.ts';
import { removeFiles } from './prune.ts';
import { BASH_PACKAGE, installBash } from './login-shell.ts';
import type { PackSpec } from './pack.ts';

export const NODE_PACK: PackSpec = {
  name: 'node',
  // `-e CODE`: CommonJS, `require` works, nothing is printed but what the code prints.
  interpreter: ['node', '-e'],
  roots: ['nodejs', 'busybox-static', BASH_PACKAGE],
  // node is built to use OpenSSL's default CA store (/usr/lib/ssl/certs), which installCaBundle fills.
  extras: ['ca-certificates'],
  async makeRoot(tree, detail) {
    await installCaBundle(tree);
    await installBash(tree);
    detail(`busybox: ${await installBusyboxApplets(tree)} applets`);
    await pruneNode(tree);
    await pruneCommon(tree);
    await addBaseFiles(tree, NODE_PACK);
  },
};

/** What node never reads at run time. */
export async function pruneNode(tree: string): Promise<void> {
  const share = join(tree, 'usr/share/nodejs');
  // TypeScript declarations (@types/node alone is 7 MB, twice over for ts4.8), source maps, readmes.
  await rm(join(share, '@types'), { recursive: true, force: true });
  await removeFiles(share, (f) => /\.(d\.ts|map|md|markdown)$/i.test(f) || /(^|\/)(CHANGELOG|HISTORY|README)[^/]*$/i.test(f));
  for (const p of ['usr/share/systemtap', 'usr/share/bash-completion', 'usr/share/gdb', 'usr/include']) {
    await rm(join(tree, p), { recursive: true, force: true });
  }
  // glibc's iconv modules: node converts with ICU.
  await rm(join(tree, 'usr/lib/x86_64-linux-gnu/gconv'), { recursive: true, force: true });
}
