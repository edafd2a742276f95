// Targets `shell`, `python`, `node`, `python-data`: a language pack is a root tree made from Debian
// packages (each pack's own recipe: ./shell-pack.ts, ./python-pack.ts, ./node-pack.ts,
// ./python-data-pack.ts), packed as a reproducible zstd squashfs
// (packs/<name>.sqfs) and described by packs/<name>.json for the daemon.

import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AptPackage } from '../apt.ts';
import { MANIFEST_FORMAT, packJsonRel, packSqfsRel, sha256File, type PackMeta } from '../manifest.ts';
import { assembleFromDebs, makeSquashfs, treeBytes } from '../packs.ts';
import { debRecord, type PackPackages } from '../sources.ts';
import type { Step } from '../step-cache.ts';
import { formatBytes } from '../util.ts';

export interface PackSpec extends PackPackages {
  name: string;
  /** argv prefix; the guest appends the code as the last argument */
  interpreter: string[];
  /**
   * Turns the tree its packages were extracted into (merged /usr) into the pack's root: emberd's
   * files in, what a sandbox never uses out.
   */
  makeRoot(tree: string, detail: (text: string) => void): Promise<void>;
}

/**
 * Bumped whenever this step or a pack's makeRoot changes its outputs (part of the step key: the
 * key holds the packages, not the recipe's code).
 */
export const PACK_RECIPE_VERSION = 2;

/**
 * @param pkgs the pack's packages, extracted in this order
 * @param tmpRoot scratch space for the tree
 */
export function packStep(spec: PackSpec, pkgs: readonly AptPackage[], deb: (p: AptPackage) => string, tmpRoot: string): Step {
  const { name } = spec;
  return {
    name: `pack:${name}`,
    label: `pack ${name}`,
    doing: 'squashfs',
    inputs: { recipe: PACK_RECIPE_VERSION, name, interpreter: spec.interpreter, debs: pkgs.map(debRecord) },
    outputs: [packSqfsRel(name), packJsonRel(name)],
    async build(tmp, detail) {
      const tree = join(tmpRoot, `pack-${name}`);
      try {
        detail(`extracting ${pkgs.length} packages`);
        await rm(tree, { recursive: true, force: true });
        await assembleFromDebs(tree, pkgs.map(deb));
        await spec.makeRoot(tree, detail);
        const bytes = await treeBytes(tree);
        detail(`mksquashfs (${formatBytes(bytes)} tree)`);
        await makeSquashfs(tree, tmp(packSqfsRel(name)));
        const size = (await stat(tmp(packSqfsRel(name)))).size;
        const meta: PackMeta = {
          format: MANIFEST_FORMAT,
          name,
          interpreter: spec.interpreter,
          image: `${name}.sqfs`,
          size,
          sha256: await sha256File(tmp(packSqfsRel(name))),
          packages: pkgs.map((p) => ({ name: p.name, version: p.version })),
        };
        await writeFile(tmp(packJsonRel(name)), `${JSON.stringify(meta, null, 2)}\n`);
        detail(`${formatBytes(size)} from ${formatBytes(bytes)}`);
        return (inputs) => {
          inputs.packs[name] = { packages: pkgs.map(debRecord) };
        };
      } finally {
        await rm(tree, { recursive: true, force: true });
      }
    },
  };
}
