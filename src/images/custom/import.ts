// `emberd packs import NAME --oci-archive FILE | --rootfs DIR`: someone else's root filesystem as a
// pack. The image needs no init of its own (emberd-init, from the initramfs, is PID 1 and mounts
// the pack as the root); what it needs for emberd is checked and, where it can be, added
// (pack-contract.ts, busybox-tools.ts).
//
// Key: the archive's sha256 (or the directory's content digest), the options, and the
// busybox-static .deb that would fill in missing tools (whether it is needed follows from the
// archive, so it is always part of the key).

import { rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ensureDownloaded, type AptPackage } from '../apt.ts';
import { sha256File } from '../manifest.ts';
import type { Progress } from '../progress.ts';
import { debRecord, resolveDownloadsDir, resolvePackages } from '../sources.ts';
import type { StepOutcome } from '../step-cache.ts';
import { run } from '../util.ts';
import { BUSYBOX_DEB, addBusyboxTools } from './busybox-tools.ts';
import { customPackStep, type TreeResult } from './custom-step.ts';
import { CustomPackError } from './errors.ts';
import { withImagesDir } from './images-session.ts';
import { checkCustomPackName } from './names.ts';
import { IMPORT_REF, openImageArchive } from './oci-archive.ts';
import { checkUmoci, unpackImage } from './oci-unpack.ts';
import { checkInterpreter, missingTools, writeEmberdFiles } from './pack-contract.ts';
import { treeDigest } from './tree-digest.ts';

export type ImportSource = { kind: 'oci-archive'; path: string; tag?: string | undefined } | { kind: 'rootfs'; path: string };

export interface ImportOptions {
  dir: string;
  name: string;
  source: ImportSource;
  /** default: sh -c */
  interpreter?: string[] | undefined;
  /** wins over the image config's Env */
  env?: Record<string, string>;
  description?: string | undefined;
  force?: boolean;
  downloadsDir?: string | undefined;
  progress: Progress;
}

export const DEFAULT_IMPORT_INTERPRETER = ['sh', '-c'];

export async function importPack(opts: ImportOptions): Promise<StepOutcome> {
  const { name, progress } = opts;
  checkCustomPackName(name, 'the pack name');
  const source = { ...opts.source, path: resolve(opts.source.path) };
  const st = await stat(source.path).catch(() => null);
  if (source.kind === 'oci-archive' && st?.isFile() !== true) throw new CustomPackError('PACK_IMPORT_INVALID', `--oci-archive ${source.path} is not a file`);
  if (source.kind === 'rootfs' && st?.isDirectory() !== true) throw new CustomPackError('PACK_IMPORT_INVALID', `--rootfs ${source.path} is not a directory`);
  if (source.kind === 'oci-archive') await checkUmoci();
  const interpreter = opts.interpreter ?? DEFAULT_IMPORT_INTERPRETER;
  const flagEnv = opts.env ?? {};

  return withImagesDir(opts.dir, progress, opts.force === true, async ({ dir, cache, tmpRoot }) => {
    const digest = await progress.step(`hash ${source.kind === 'rootfs' ? 'the root directory' : 'the archive'}`, async (detail) => {
      const d = source.kind === 'rootfs' ? await treeDigest(source.path, 'full') : await sha256File(source.path);
      detail(d.slice(0, 16));
      return d;
    });
    const busybox = (await resolvePackages({ kernelMeta: undefined, packs: [{ name: 'tools', roots: [BUSYBOX_DEB], extras: [] }] }, tmpRoot, progress)).packs.get('tools')?.find((p) => p.name === BUSYBOX_DEB) as AptPackage;
    const downloads = resolveDownloadsDir(dir, opts.downloadsDir);

    await cache.run(
      customPackStep(
        {
          name,
          description: opts.description,
          doing: 'import',
          inputs: {
            kind: source.kind,
            source: source.kind === 'rootfs' ? { digest } : { sha256: digest, tag: source.tag },
            interpreter,
            env: flagEnv,
            busybox: debRecord(busybox),
          },
          async makeTree(tree, detail): Promise<TreeResult> {
            let imageEnv: Record<string, string> = {};
            let src: TreeResult['source'];
            if (source.kind === 'oci-archive') {
              detail('reading the archive');
              const image = await openImageArchive(source.path, join(tmpRoot, 'oci-layout'), source.tag);
              detail(`applying the layers of ${image.ref} (umoci)`);
              await unpackImage(image.layout, IMPORT_REF, tree);
              await rm(image.layout, { recursive: true, force: true });
              imageEnv = image.env;
              src = { kind: 'oci-archive', sha256: digest, ref: image.ref };
            } else {
              detail('copying the root directory');
              await run('cp', ['-a', '--reflink=auto', '--no-target-directory', source.path, tree]);
              src = { kind: 'rootfs', digest };
            }
            const env = { ...imageEnv, ...flagEnv };
            const missing = await missingTools(tree);
            let added: string[] = [];
            if (missing.length > 0) {
              detail(`adding busybox for ${missing.join(' ')}`);
              const [deb] = await ensureDownloaded([busybox], downloads);
              added = await addBusyboxTools(tree, deb as string, missing, tmpRoot);
            }
            await writeEmberdFiles(tree, name, interpreter);
            await checkInterpreter(tree, interpreter, env, 'PACK_IMPORT_INVALID', 'name one the image has with --interpreter, e.g. --interpreter "python3 -c"');
            return {
              interpreter,
              env,
              packages: added.length > 0 ? [{ name: busybox.name, version: busybox.version }] : [],
              debs: added.length > 0 ? [debRecord(busybox)] : [],
              source: src,
              added,
            };
          },
        },
        tmpRoot,
      ),
    );
    return cache.outcomes.at(-1) as StepOutcome;
  });
}
