// The step every custom pack ends with (`packs build` and `packs import` differ only in how the
// tree is made): the tree, a reproducible zstd squashfs (the same mksquashfs call as the built-in
// packs) and packs/<name>.json in the built-in packs' shape plus what marks it as custom.

import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_FORMAT, packJsonRel, packSqfsRel, sha256File, type DebRecord, type PackMeta } from '../manifest.ts';
import { makeSquashfs, treeBytes } from '../packs.ts';
import type { Step } from '../step-cache.ts';
import { formatBytes, sha256Hex, stableJson } from '../util.ts';

/**
 * Bumped whenever this step, the spec build or the import changes what they write (part of every
 * custom step's key: the key holds the inputs, not the code).
 */
export const CUSTOM_RECIPE_VERSION = 1;

/** packs/<name>.json of a custom pack. */
export interface CustomPackMeta extends PackMeta {
  custom: true;
  env: Record<string, string>;
  /** sha256 of the step's inputs as stable JSON (the spec with its files' contents, the base, the archive...) */
  inputs_sha256: string;
  /** how the tree was made */
  source:
    | { kind: 'spec'; base: string; base_sha256: string; spec_sha256: string }
    | { kind: 'oci-archive'; sha256: string; ref: string }
    | { kind: 'rootfs'; digest: string };
  /** files the importer added for emberd (e.g. busybox tools the image lacked) */
  added?: string[];
}

/** What a recipe's tree came out as: the json's variable part. */
export interface TreeResult {
  interpreter: string[];
  env: Record<string, string>;
  packages: { name: string; version: string }[];
  /** the Debian packages in the pack, for manifest.inputs.packs */
  debs: DebRecord[];
  source: CustomPackMeta['source'];
  added?: string[];
}

export interface CustomRecipe {
  name: string;
  description?: string;
  /** the progress word: "build", "import" */
  doing: string;
  /** everything the pack depends on (without the recipe version, added here) */
  inputs: Record<string, unknown>;
  /** fills `tree` (a fresh path) with the pack's root */
  makeTree(tree: string, detail: (text: string) => void): Promise<TreeResult>;
}

/** sha256 of a recipe's inputs, as its json records them. */
export function inputsSha256(inputs: Record<string, unknown>): string {
  return sha256Hex(stableJson({ recipe: CUSTOM_RECIPE_VERSION, ...inputs }));
}

export function customPackStep(recipe: CustomRecipe, tmpRoot: string): Step {
  const { name } = recipe;
  const inputs = { recipe: CUSTOM_RECIPE_VERSION, ...recipe.inputs };
  return {
    name: `pack:${name}`,
    label: `pack ${name}`,
    doing: recipe.doing,
    inputs,
    outputs: [packSqfsRel(name), packJsonRel(name)],
    async build(tmp, detail) {
      const tree = join(tmpRoot, `custom-${name}`);
      try {
        await rm(tree, { recursive: true, force: true });
        const r = await recipe.makeTree(tree, detail);
        const bytes = await treeBytes(tree);
        detail(`mksquashfs (${formatBytes(bytes)} tree)`);
        await makeSquashfs(tree, tmp(packSqfsRel(name)));
        const size = (await stat(tmp(packSqfsRel(name)))).size;
        const meta: CustomPackMeta = {
          format: MANIFEST_FORMAT,
          name,
          interpreter: r.interpreter,
          image: `${name}.sqfs`,
          size,
          sha256: await sha256File(tmp(packSqfsRel(name))),
          packages: r.packages,
          ...(recipe.description !== undefined && { description: recipe.description }),
          env: r.env,
          custom: true,
          inputs_sha256: inputsSha256(recipe.inputs),
          source: r.source,
          ...(r.added !== undefined && r.added.length > 0 && { added: r.added }),
        };
        await writeFile(tmp(packJsonRel(name)), `${JSON.stringify(meta, null, 2)}\n`);
        detail(`${formatBytes(size)} from ${formatBytes(bytes)}`);
        return (m) => {
          m.packs[name] = { packages: r.debs };
        };
      } finally {
        await rm(tree, { recursive: true, force: true });
      }
    },
  };
}
