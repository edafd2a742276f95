// `emberd images build`: kernel (vmlinux + bzImage), initramfs (emberd-init + modules) and
// language packs (squashfs), all from Debian packages, reproducibly, into the images dir.
//
// Every output is written under a temp name and renamed into place; a step's manifest record is
// removed before the step starts and written after its outputs are in place, so an interrupted
// build never leaves something that looks done. A step is skipped when its record's key (a hash
// of everything its outputs depend on) matches and its files are present with the recorded hash.

import { copyFile, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { aptOptions, aptShow, ensureDownloaded, extractDeb, resolveClosures, resolveKernelPackage, type AptPackage } from './apt.ts';
import { extractVmlinux, findModules, moduleDepends, moduleLoadOrder, parseModinfo } from './kernel.ts';
import {
  BZIMAGE_REL,
  INITRAMFS_REL,
  MANIFEST_FORMAT,
  MANIFEST_NAME,
  VMLINUX_REL,
  packJsonRel,
  packSqfsRel,
  readManifest,
  sha256File,
  type DebRecord,
  type Manifest,
  type PackMeta,
} from './manifest.ts';
import { buildNewc, type NewcEntry } from './newc.ts';
import {
  PACKS,
  PACK_RECIPE_VERSION,
  addBaseFiles,
  addPythonLinks,
  assembleFromDebs,
  compilePython,
  installBusyboxApplets,
  installCaBundle,
  makeSquashfs,
  pruneCommon,
  prunePython,
  treeBytes,
  type PackSpec,
} from './packs.ts';
import { silentProgress, type Progress } from './progress.ts';
import { CommandError, acquireLock, commitFile, formatBytes, run, sha256Hex, stableJson, tempName, writeFileAtomic } from './util.ts';

export const TARGETS = ['kernel', 'initramfs', 'shell', 'python'] as const;
export type ImageTarget = (typeof TARGETS)[number];

export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

/** Modules copied (flat) into the initramfs /lib/modules, in load order. */
export const INITRAMFS_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_console',
  'virtio_blk',
  'squashfs',
  'overlay',
  'vsock',
  'vmw_vsock_virtio_transport_common',
  'vmw_vsock_virtio_transport',
] as const;

/** Mount points etc. created in the initramfs. */
export const INITRAMFS_DIRS = ['dev', 'proc', 'sys', 'run', 'mnt', 'mnt/lower', 'mnt/upper', 'newroot', 'lib', 'lib/modules'] as const;

const KERNEL_RECIPE_VERSION = 1;
const INITRAMFS_RECIPE_VERSION = 1;

/** The repository root (src/images/../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface BuildOptions {
  dir: string;
  /** subset of targets; default all */
  only?: readonly ImageTarget[];
  /** rebuild even if up to date */
  force?: boolean;
  /** .deb cache; default $EMBERD_IMAGES_DOWNLOADS, else <dir>/downloads */
  downloadsDir?: string;
  /** use this emberd-init instead of running `make -C guest` (tests, prebuilt agents) */
  initBinary?: string;
  repoRoot?: string;
  kernelMetaPackage?: string;
  progress?: Progress;
}

export interface StepOutcome {
  step: string;
  status: 'built' | 'cached';
  seconds: number;
}

export interface BuildResult {
  dir: string;
  manifest: Manifest;
  steps: StepOutcome[];
}

function emptyManifest(): Manifest {
  return { format: MANIFEST_FORMAT, created: new Date().toISOString(), inputs: { packs: {} }, steps: {}, files: {} };
}

function debRecord(p: AptPackage): DebRecord {
  return { name: p.name, version: p.version, arch: p.arch, sha256: p.sha256 };
}

export function resolveDownloadsDir(dir: string, explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit !== undefined && explicit !== '') return resolve(explicit);
  const e = env['EMBERD_IMAGES_DOWNLOADS'];
  if (e !== undefined && e !== '') return resolve(e);
  return join(dir, 'downloads');
}

export async function buildImages(opts: BuildOptions): Promise<BuildResult> {
  const dir = resolve(opts.dir);
  const targets = new Set<ImageTarget>(opts.only ?? TARGETS);
  const progress = opts.progress ?? silentProgress;
  const repoRoot = opts.repoRoot ?? REPO_ROOT;
  const downloadsDir = resolveDownloadsDir(dir, opts.downloadsDir);
  const tmpRoot = join(dir, 'tmp');
  const outcomes: StepOutcome[] = [];

  await mkdir(dir, { recursive: true });
  const unlock = await acquireLock(join(dir, '.lock'));
  // Directory modes of things created while building (e.g. __pycache__ by compileall) must not
  // depend on the caller's umask.
  const savedUmask = process.umask(0o022);
  try {
    await rm(tmpRoot, { recursive: true, force: true });
    await mkdir(tmpRoot, { recursive: true });
    await removeStaleTempFiles(dir);

    let manifest: Manifest;
    try {
      manifest = (await readManifest(dir)) ?? emptyManifest();
    } catch (e) {
      progress.info(`ignoring unreadable manifest: ${(e as Error).message}`);
      manifest = emptyManifest();
    }
    const saveManifest = async (): Promise<void> => {
      manifest.created = new Date().toISOString();
      await writeFileAtomic(join(dir, MANIFEST_NAME), `${JSON.stringify(manifest, null, 2)}\n`);
    };
    const upToDate = async (step: string, key: string): Promise<boolean> => {
      if (opts.force === true) return false;
      const rec = manifest.steps[step];
      if (rec === undefined || rec.key !== key) return false;
      // Full re-hash (~0.2 s for everything): a damaged output is rebuilt, not trusted.
      for (const f of rec.files) {
        const fr = manifest.files[f];
        if (fr === undefined) return false;
        try {
          if ((await stat(join(dir, f))).size !== fr.size) return false;
          if ((await sha256File(join(dir, f))) !== fr.sha256) return false;
        } catch {
          return false;
        }
      }
      return true;
    };
    const forget = async (step: string): Promise<void> => {
      const rec = manifest.steps[step];
      if (rec === undefined) return;
      for (const f of rec.files) delete manifest.files[f];
      delete manifest.steps[step];
      await saveManifest();
    };
    /** Moves finished temp files into place and records them under `step`. */
    const commit = async (step: string, key: string, outputs: [tmp: string, rel: string][]): Promise<void> => {
      for (const [tmp, rel] of outputs) {
        const size = (await stat(tmp)).size;
        const sha256 = await sha256File(tmp);
        await mkdir(join(dir, rel, '..'), { recursive: true });
        await commitFile(tmp, join(dir, rel));
        manifest.files[rel] = { sha256, size };
      }
      manifest.steps[step] = { key, files: outputs.map(([, rel]) => rel) };
      await saveManifest();
    };
    const timed = async (step: string, label: string, key: string, fn: () => Promise<void>): Promise<void> => {
      const t0 = performance.now();
      if (await upToDate(step, key)) {
        progress.skip(label, 'up to date');
        outcomes.push({ step, status: 'cached', seconds: (performance.now() - t0) / 1000 });
        return;
      }
      await forget(step);
      await fn();
      outcomes.push({ step, status: 'built', seconds: (performance.now() - t0) / 1000 });
    };

    // 1. emberd-init
    let init: { path: string; sha256: string; size: number; source: string } | undefined;
    if (targets.has('initramfs')) {
      init = await progress.step(opts.initBinary !== undefined ? 'emberd-init' : 'emberd-init (make -C guest)', async (detail) => {
        let path: string;
        if (opts.initBinary !== undefined) {
          path = resolve(opts.initBinary);
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

    // 2. resolve packages (local apt metadata only; works offline)
    const needKernel = targets.has('kernel') || targets.has('initramfs');
    const packNames = (['shell', 'python'] as const).filter((n) => targets.has(n));
    const resolved = await progress.step('resolve packages (apt)', (detail) => withAptHint(async () => {
      const aptOpts = aptOptions(join(tmpRoot, 'apt-cache'));
      await mkdir(join(tmpRoot, 'apt-cache'), { recursive: true });
      const kernel = needKernel ? await resolveKernelPackage(opts.kernelMetaPackage ?? KERNEL_META_PACKAGE, aptOpts) : undefined;
      const closures = await resolveClosures(Object.fromEntries(packNames.map((n) => [n, (PACKS[n] as PackSpec).roots])), aptOpts);
      const packs = new Map<string, AptPackage[]>();
      for (const name of packNames) {
        const pkgs = closures[name] as AptPackage[];
        for (const extra of (PACKS[name] as PackSpec).extras) {
          try {
            pkgs.push(...(await aptShow([extra], aptOpts)));
          } catch {
            progress.info(`${name}: optional package ${extra} not available, skipping`);
          }
        }
        packs.set(name, pkgs);
      }
      const parts = [
        ...(kernel ? [`${kernel.name} ${kernel.version}`] : []),
        ...[...packs].map(([n, p]) => `${n}: ${p.length} pkgs`),
      ];
      detail(parts.join(', '));
      return { kernel, packs };
    }));

    // 3. downloads (verified against the apt index sha256; cached files reused)
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
    const debOf = (p: AptPackage): string => debPaths.get(`${p.name}=${p.version}`) as string;

    // Kernel package extracted once, lazily, for the kernel and initramfs steps.
    let kernelTree: Promise<string> | undefined;
    const kernelTreeDir = (): Promise<string> => {
      kernelTree ??= (async () => {
        const t = join(tmpRoot, 'kernel-deb');
        await extractDeb(debOf(resolved.kernel as AptPackage), t);
        return t;
      })();
      return kernelTree;
    };

    // 4. kernel
    if (targets.has('kernel')) {
      const k = resolved.kernel as AptPackage;
      const release = k.name.replace(/^linux-image-/, '');
      const key = sha256Hex(stableJson({ recipe: KERNEL_RECIPE_VERSION, deb: debRecord(k) }));
      await timed('kernel', `kernel ${release}`, key, () =>
        progress.step(`kernel ${release} (vmlinux + bzImage)`, async (detail) => {
          const tree = await kernelTreeDir();
          const bzSrc = join(tree, 'boot', `vmlinuz-${release}`);
          const bzOut = join(dir, BZIMAGE_REL);
          const vmOut = join(dir, VMLINUX_REL);
          await mkdir(join(dir, 'kernel'), { recursive: true });
          const bzTmp = tempName(bzOut);
          const vmTmp = tempName(vmOut);
          try {
            await copyFile(bzSrc, bzTmp);
            const size = await extractVmlinux(bzTmp, vmTmp);
            detail(`vmlinux ${formatBytes(size)}`);
            manifest.inputs.kernel = { meta: opts.kernelMetaPackage ?? KERNEL_META_PACKAGE, package: k.name, version: k.version, release, debSha256: k.sha256 };
            await commit('kernel', key, [
              [vmTmp, VMLINUX_REL],
              [bzTmp, BZIMAGE_REL],
            ]);
          } finally {
            await rm(bzTmp, { force: true });
            await rm(vmTmp, { force: true });
          }
        }),
      );
    }

    // 5. initramfs
    if (targets.has('initramfs')) {
      const k = resolved.kernel as AptPackage;
      const i = init as NonNullable<typeof init>;
      const release = k.name.replace(/^linux-image-/, '');
      const key = sha256Hex(
        stableJson({ recipe: INITRAMFS_RECIPE_VERSION, deb: debRecord(k), init: i.sha256, modules: INITRAMFS_MODULES, dirs: INITRAMFS_DIRS }),
      );
      await timed('initramfs', 'initramfs', key, () =>
        progress.step('initramfs (newc, uncompressed)', async (detail) => {
          const r = await buildInitramfs(await kernelTreeDir(), release, i.path);
          const out = join(dir, INITRAMFS_REL);
          const tmp = tempName(out);
          try {
            await writeFile(tmp, r.archive);
            detail(`${formatBytes(r.archive.length)}, ${r.order.length} modules`);
            manifest.inputs.init = { sha256: i.sha256, size: i.size, source: i.source };
            manifest.inputs.initramfsModules = r.order;
            await commit('initramfs', key, [[tmp, INITRAMFS_REL]]);
          } finally {
            await rm(tmp, { force: true });
          }
        }),
      );
    }

    // 6. packs
    for (const name of packNames) {
      const spec = PACKS[name] as PackSpec;
      const pkgs = resolved.packs.get(name) as AptPackage[];
      const key = sha256Hex(
        stableJson({ recipe: PACK_RECIPE_VERSION, name, interpreter: spec.interpreter, debs: pkgs.map(debRecord) }),
      );
      await timed(`pack:${name}`, `pack ${name}`, key, () =>
        progress.step(`pack ${name} (squashfs)`, async (detail) => {
          const tree = join(tmpRoot, `pack-${name}`);
          const sqfsOut = join(dir, packSqfsRel(name));
          const jsonOut = join(dir, packJsonRel(name));
          await mkdir(join(dir, 'packs'), { recursive: true });
          const sqfsTmp = tempName(sqfsOut);
          const jsonTmp = tempName(jsonOut);
          try {
            detail(`extracting ${pkgs.length} packages`);
            await assemblePackTree(spec, tree, pkgs.map(debOf), detail);
            const bytes = await treeBytes(tree);
            detail(`mksquashfs (${formatBytes(bytes)} tree)`);
            await makeSquashfs(tree, sqfsTmp);
            const size = (await stat(sqfsTmp)).size;
            const sha256 = await sha256File(sqfsTmp);
            const meta: PackMeta = {
              format: MANIFEST_FORMAT,
              name,
              interpreter: spec.interpreter,
              image: `${name}.sqfs`,
              size,
              sha256,
              packages: pkgs.map((p) => ({ name: p.name, version: p.version })),
            };
            await writeFile(jsonTmp, `${JSON.stringify(meta, null, 2)}\n`);
            detail(`${formatBytes(size)} from ${formatBytes(bytes)}`);
            manifest.inputs.packs[name] = { packages: pkgs.map(debRecord) };
            await commit(`pack:${name}`, key, [
              [sqfsTmp, packSqfsRel(name)],
              [jsonTmp, packJsonRel(name)],
            ]);
          } finally {
            await rm(sqfsTmp, { force: true });
            await rm(jsonTmp, { force: true });
            await rm(tree, { recursive: true, force: true });
          }
        }),
      );
    }

    return { dir, manifest, steps: outcomes };
  } finally {
    await rm(tmpRoot, { recursive: true, force: true }).catch(() => {});
    process.umask(savedUmask);
    await unlock();
  }
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

/** Temp outputs (".name.tmp-<pid>-<rand>") left by a killed build; we hold the lock. */
async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const sub of ['', 'kernel', 'packs']) {
    const names = await readdir(join(dir, sub)).catch(() => [] as string[]);
    for (const n of names) if (/^\..+\.tmp-\d+-[a-z0-9]+$/.test(n)) await rm(join(dir, sub, n), { force: true });
  }
}

/** Builds the initramfs archive from an extracted kernel package and the init binary. */
export async function buildInitramfs(
  kernelTree: string,
  release: string,
  initPath: string,
  modules: readonly string[] = INITRAMFS_MODULES,
): Promise<{ archive: Buffer; order: string[] }> {
  const found = await findModules(kernelTree, release);
  const deps = new Map<string, string[]>();
  const data = new Map<string, Buffer>();
  for (const m of modules) {
    const p = found.get(m);
    if (p === undefined) throw new Error(`module ${m}.ko not found in the kernel package (built in, or compressed?)`);
    const buf = await readFile(p);
    data.set(m, buf);
    deps.set(m, moduleDepends(parseModinfo(buf)));
  }
  const order = moduleLoadOrder(modules, deps);
  const entries: NewcEntry[] = [
    ...INITRAMFS_DIRS.map((d): NewcEntry => ({ type: 'dir', path: d, mode: 0o755 })),
    { type: 'char', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
    { type: 'file', path: 'init', mode: 0o755, data: await readFile(initPath) },
    ...order.map((m): NewcEntry => ({ type: 'file', path: `lib/modules/${m}.ko`, mode: 0o644, data: data.get(m) as Buffer })),
    { type: 'file', path: 'lib/modules/load-order', mode: 0o644, data: Buffer.from(order.map((m) => `${m}\n`).join('')) },
  ];
  return { archive: buildNewc(entries), order };
}

/** Assembles a pack's root tree from its .debs (in order) plus emberd's own files. */
export async function assemblePackTree(
  spec: PackSpec,
  tree: string,
  debs: readonly string[],
  detail: (s: string) => void = () => {},
): Promise<void> {
  await rm(tree, { recursive: true, force: true });
  await assembleFromDebs(tree, debs);
  if (spec.name === 'python') {
    await installCaBundle(tree);
    await addPythonLinks(tree);
  }
  const applets = await installBusyboxApplets(tree);
  detail(`busybox: ${applets} applets`);
  if (spec.name === 'python') await prunePython(tree);
  await pruneCommon(tree);
  await addBaseFiles(tree, spec);
  if (spec.name === 'python') {
    detail('compiling stdlib bytecode');
    await compilePython(tree);
  }
}
