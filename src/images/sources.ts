// What the targets are built from: Debian packages resolved through the host's apt (local
// metadata only, so it works offline), downloaded once into a shared .deb cache and verified
// against the apt index's sha256.

import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { aptOptions, aptShow, ensureDownloaded, extractDeb, resolveClosures, resolveKernelPackage, type AptPackage } from './apt.ts';
import type { DebRecord } from './manifest.ts';
import type { Progress } from './progress.ts';
import { CommandError, formatBytes } from './util.ts';

/** The apt packages a language pack is made of. */
export interface PackPackages {
  name: string;
  /** apt roots whose dependency closure goes in (Essential packages not forced in) */
  roots: readonly string[];
  /** extra packages taken without their dependencies (missing from the archive = skipped) */
  extras: readonly string[];
}

export interface ResolvedPackages {
  /** the real kernel image package (the metapackage resolved), when a kernel is needed */
  kernel: AptPackage | undefined;
  /** by pack name, in the order the packs were asked for */
  packs: Map<string, AptPackage[]>;
}

/** The .deb cache: `explicit`, else $EMBERD_IMAGES_DOWNLOADS, else <images dir>/downloads. */
export function resolveDownloadsDir(dir: string, explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit !== undefined && explicit !== '') return resolve(explicit);
  const e = env['EMBERD_IMAGES_DOWNLOADS'];
  if (e !== undefined && e !== '') return resolve(e);
  return join(dir, 'downloads');
}

/** What the manifest records about a package that went into an output. */
export function debRecord(p: AptPackage): DebRecord {
  return { name: p.name, version: p.version, arch: p.arch, sha256: p.sha256 };
}

/** `linux-image-6.1.0-57-cloud-amd64` -> `6.1.0-57-cloud-amd64` (its `uname -r`). */
export function kernelRelease(k: AptPackage): string {
  return k.name.replace(/^linux-image-/, '');
}

/** Resolves the kernel metapackage (if given) and each pack's closure with one apt solver run. */
export async function resolvePackages(
  want: { kernelMeta: string | undefined; packs: readonly PackPackages[] },
  tmpRoot: string,
  progress: Progress,
): Promise<ResolvedPackages> {
  return progress.step('resolve packages (apt)', (detail) =>
    withAptHint(async () => {
      const aptOpts = aptOptions(join(tmpRoot, 'apt-cache'));
      await mkdir(join(tmpRoot, 'apt-cache'), { recursive: true });
      const kernel = want.kernelMeta !== undefined ? await resolveKernelPackage(want.kernelMeta, aptOpts) : undefined;
      const closures = await resolveClosures(Object.fromEntries(want.packs.map((p) => [p.name, p.roots])), aptOpts);
      const packs = new Map<string, AptPackage[]>();
      for (const spec of want.packs) {
        const pkgs = closures[spec.name] as AptPackage[];
        for (const extra of spec.extras) {
          try {
            pkgs.push(...(await aptShow([extra], aptOpts)));
          } catch {
            progress.info(`${spec.name}: optional package ${extra} not available, skipping`);
          }
        }
        packs.set(spec.name, pkgs);
      }
      const parts = [...(kernel ? [`${kernel.name} ${kernel.version}`] : []), ...[...packs].map(([n, p]) => `${n}: ${p.length} pkgs`)];
      detail(parts.join(', '));
      return { kernel, packs };
    }),
  );
}

/** Makes sure every resolved package is in the .deb cache; returns the path of each one's .deb. */
export async function downloadPackages(
  resolved: ResolvedPackages,
  downloadsDir: string,
  progress: Progress,
): Promise<(p: AptPackage) => string> {
  const all = new Map<string, AptPackage>();
  if (resolved.kernel) all.set(`${resolved.kernel.name}=${resolved.kernel.version}`, resolved.kernel);
  for (const pkgs of resolved.packs.values()) for (const p of pkgs) all.set(`${p.name}=${p.version}`, p);
  const allPkgs = [...all.values()];
  const debPaths = new Map<string, string>();
  await progress.step(`download ${allPkgs.length} packages`, async (detail) => {
    const paths = await ensureDownloaded(allPkgs, downloadsDir, (n, bytes) => detail(`fetching ${n} (${formatBytes(bytes)})`));
    allPkgs.forEach((p, i) => debPaths.set(`${p.name}=${p.version}`, paths[i] as string));
    detail(`in ${downloadsDir}`);
  });
  return (p) => debPaths.get(`${p.name}=${p.version}`) as string;
}

/** A .deb's files, extracted into `dest` on first use (the kernel and initramfs steps share one). */
export function lazyExtract(deb: string, dest: string): () => Promise<string> {
  let tree: Promise<string> | undefined;
  return () => {
    tree ??= (async () => {
      await extractDeb(deb, dest);
      return dest;
    })();
    return tree;
  };
}

/** apt's "unable to locate" on a host without (bookworm) package lists gets a hint. */
async function withAptHint<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CommandError && /Unable to locate package|No packages found|has no installation candidate/.test(e.stderr)) {
      throw new Error(`${e.message}\napt does not know the Debian bookworm packages emberd builds from: run \`apt-get update\` (the host must be Debian 12 with main enabled)`, { cause: e });
    }
    throw e;
  }
}
