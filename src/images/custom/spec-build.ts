// `emberd packs build SPEC`: a built-in pack (as built in the images dir) plus a spec's Debian
// packages, files, environment and interpreter, as packs/<name>.sqfs + .json.
//
// The base is taken from its built squashfs, not rebuilt from its recipe: the custom pack is
// exactly the base plus the additions, and the base's sha256 is in the key (rebuilding the base,
// e.g. after a Debian security update, makes the custom pack out of date). The extra packages are
// resolved by the builder's apt machinery (sources.ts: closure without Essential-only edges,
// verified .deb cache), less what the base already has.

import { join } from 'node:path';
import { aptOptions, aptShow, extractDeb, parseDepends, type AptPackage } from '../apt.ts';
import { installCaBundle, pruneCommon } from '../packs.ts';
import type { Progress } from '../progress.ts';
import { debRecord, downloadPackages, resolveDownloadsDir, resolvePackages } from '../sources.ts';
import type { StepOutcome } from '../step-cache.ts';
import { run, sha256Hex, stableJson } from '../util.ts';
import { loadBasePack, type BasePack } from './base-pack.ts';
import { copyIntoRoot } from './copy-in.ts';
import { customPackStep } from './custom-step.ts';
import { checkDebNames, describeDebProblems } from './deb-names.ts';
import { CustomPackError } from './errors.ts';
import { withImagesDir } from './images-session.ts';
import { checkInterpreter, writeEmberdFiles } from './pack-contract.ts';
import type { CustomPackSpec } from './spec.ts';
import { treeDigest } from './tree-digest.ts';

export interface SpecBuildOptions {
  dir: string;
  force?: boolean;
  /** .deb cache; default $EMBERD_IMAGES_DOWNLOADS, else <dir>/downloads */
  downloadsDir?: string;
  progress: Progress;
}

export async function buildPackFromSpec(spec: CustomPackSpec, opts: SpecBuildOptions): Promise<StepOutcome> {
  const { progress } = opts;
  return withImagesDir(opts.dir, progress, opts.force === true, async ({ dir, cache, tmpRoot }) => {
    const base = await loadBasePack(dir, cache.manifest, spec.base);
    const extras = await resolveExtras(spec, base, tmpRoot, progress);
    const deb = extras.length > 0 ? await downloadPackages({ kernel: undefined, packs: new Map([[spec.name, extras]]) }, resolveDownloadsDir(dir, opts.downloadsDir), progress) : () => '';
    const interpreter = spec.interpreter ?? base.meta.interpreter;
    const files = [];
    for (const f of spec.files) files.push({ dest: f.dest, mode: f.mode, digest: await treeDigest(f.src, 'exec') });
    const normalized = { name: spec.name, base: spec.base, description: spec.description, packages: spec.packages, files, env: spec.env, interpreter };
    const specSha256 = sha256Hex(stableJson(normalized));
    const packages = [...base.meta.packages, ...extras.map((p) => ({ name: p.name, version: p.version }))].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

    await cache.run(
      customPackStep(
        {
          name: spec.name,
          description: spec.description,
          doing: 'build',
          inputs: { kind: 'spec', spec: normalized, base: { name: base.name, sha256: base.sha256 }, debs: extras.map(debRecord) },
          async makeTree(tree, detail) {
            detail(`unpacking base ${base.name}`);
            await run('unsquashfs', ['-no-xattrs', '-q', '-n', '-d', tree, base.image]);
            if (extras.length > 0) {
              detail(`extracting ${extras.length} packages`);
              for (const p of extras) await extractDeb(deb(p), tree);
              await installCaBundle(tree);
              await pruneCommon(tree);
            }
            if (spec.files.length > 0) {
              let n = 0;
              for (const f of spec.files) n += await copyIntoRoot(tree, f);
              detail(`copied ${n} files`);
            }
            await writeEmberdFiles(tree, spec.name, interpreter);
            await checkInterpreter(
              tree,
              interpreter,
              spec.env,
              'PACK_SPEC_INVALID',
              `add the package that has it to packages, copy it in with files, or set interpreter: in ${spec.file}`,
            );
            return {
              interpreter,
              env: spec.env,
              packages,
              debs: [...base.debs, ...extras.map(debRecord)],
              source: { kind: 'spec', base: base.name, base_sha256: base.sha256, spec_sha256: specSha256 },
            };
          },
        },
        tmpRoot,
      ),
    );
    return cache.outcomes.at(-1) as StepOutcome;
  });
}

/** The spec's packages with their dependencies, less the packages the base already has. */
async function resolveExtras(spec: CustomPackSpec, base: BasePack, tmpRoot: string, progress: Progress): Promise<AptPackage[]> {
  if (spec.packages.length === 0) return [];
  const problems = await checkDebNames(spec.packages);
  if (problems.length > 0) throw new CustomPackError('PACK_SPEC_INVALID', `${spec.file}:\n${describeDebProblems(problems).map((p) => `  ${p}`).join('\n')}`);
  const resolved = await resolvePackages({ kernelMeta: undefined, packs: [{ name: spec.name, roots: spec.packages, extras: [] }] }, tmpRoot, progress);
  const inBase = new Set(base.meta.packages.map((p) => p.name));
  const extras = (resolved.packs.get(spec.name) ?? []).filter((p) => !inBase.has(p.name));
  for (const note of await essentialNotes(extras, inBase, tmpRoot)) progress.info(note);
  return extras;
}

/**
 * Dependencies the closure left out because they are Essential in Debian (assumed present there;
 * here the base's busybox stands in for most, but e.g. perl-base is needed by perl programs).
 */
async function essentialNotes(extras: readonly AptPackage[], inBase: ReadonlySet<string>, tmpRoot: string): Promise<string[]> {
  const have = new Set([...inBase, ...extras.map((p) => p.name)]);
  for (const p of extras) for (const [v] of parseDepends(p.provides)) if (v !== undefined) have.add(v);
  const left = new Map<string, string[]>();
  for (const p of extras) {
    for (const alts of [...parseDepends(p.preDepends), ...parseDepends(p.depends)]) {
      if (alts.some((a) => have.has(a))) continue;
      const first = alts[0];
      if (first !== undefined) left.set(first, [...(left.get(first) ?? []), p.name]);
    }
  }
  const notes: string[] = [];
  for (const [dep, by] of left) {
    const essential = await aptShow([dep], aptOptions(join(tmpRoot, 'apt-cache'))).then((r) => r.some((x) => x.essential), () => false);
    if (essential) notes.push(`note: ${by.join(', ')} depends on ${dep}, which is Essential in Debian and not included (the base's busybox stands in for most); add it to packages if a program needs it`);
  }
  return notes;
}
