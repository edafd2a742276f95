// `emberd images ...`: build, path, verify. Wired into the daemon's main as the `images` subcommand.

import { parseArgs } from 'node:util';
import { TARGETS, buildImages, type ImageTarget } from './build.ts';
import { ImagesError, defaultImagesDir, readManifest, verifyImages } from './manifest.ts';
import { createProgress } from './progress.ts';
import { formatBytes } from './util.ts';

export const IMAGES_USAGE = `usage: emberd images build [--dir DIR] [--only TARGET,...] [--force]
                          [--init PATH] [--downloads DIR]
       emberd images path [--dir DIR]
       emberd images verify [--dir DIR]

  build    build the VM images from Debian packages (steps whose inputs are unchanged are skipped)
  path     print the images directory
  verify   re-hash every file against manifest.json

  --dir DIR        images directory [EMBERD_IMAGES_DIR] (default \${XDG_CACHE_HOME:-~/.cache}/emberd/images)
  --only LIST      build only these outputs (comma-separated: ${TARGETS.join(', ')})
  --force          rebuild even if up to date
  --init PATH      use this emberd-init instead of running \`make -C guest\`
  --downloads DIR  .deb cache [EMBERD_IMAGES_DOWNLOADS] (default DIR/downloads)
`;

function err(s: string): void {
  process.stderr.write(s.endsWith('\n') ? s : `${s}\n`);
}

export async function runImagesCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') {
    (sub === undefined ? err : (s: string) => process.stdout.write(s))(IMAGES_USAGE);
    return sub === undefined ? 2 : 0;
  }
  let values: { dir?: string; only?: string; force?: boolean; init?: string; downloads?: string; help?: boolean };
  try {
    const parsed = parseArgs({
      args: rest,
      allowPositionals: false,
      strict: true,
      options: {
        dir: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        ...(sub === 'build'
          ? {
              only: { type: 'string' },
              force: { type: 'boolean' },
              init: { type: 'string' },
              downloads: { type: 'string' },
            }
          : {}),
      },
    });
    values = parsed.values as typeof values;
  } catch (e) {
    err(`emberd images ${sub}: ${(e as Error).message}\n\n${IMAGES_USAGE}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(IMAGES_USAGE);
    return 0;
  }
  const dir = values.dir !== undefined && values.dir !== '' ? values.dir : defaultImagesDir();

  try {
    switch (sub) {
      case 'path':
        process.stdout.write(`${dir}\n`);
        return 0;
      case 'verify':
        return await verify(dir);
      case 'build': {
        let only: ImageTarget[] | undefined;
        if (values.only !== undefined) {
          only = [];
          for (const t of values.only.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
            if (!(TARGETS as readonly string[]).includes(t)) {
              err(`emberd images build: unknown --only target "${t}" (known: ${TARGETS.join(', ')})`);
              return 2;
            }
            only.push(t as ImageTarget);
          }
          if (only.length === 0) {
            err('emberd images build: --only needs at least one target');
            return 2;
          }
        }
        return await build(dir, { only, force: values.force === true, init: values.init, downloads: values.downloads });
      }
      default:
        err(`emberd images: unknown command "${sub}"\n\n${IMAGES_USAGE}`);
        return 2;
    }
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    err(`emberd images ${sub}: ${e instanceof ImagesError ? '' : 'error: '}${msg}`);
    return 1;
  }
}

async function build(
  dir: string,
  o: { only: ImageTarget[] | undefined; force: boolean; init: string | undefined; downloads: string | undefined },
): Promise<number> {
  const t0 = performance.now();
  const progress = createProgress();
  const res = await buildImages({
    dir,
    only: o.only,
    force: o.force,
    initBinary: o.init,
    downloadsDir: o.downloads,
    progress,
  });
  const built = res.steps.filter((s) => s.status === 'built').length;
  const cached = res.steps.length - built;
  progress.info(`images in ${res.dir} (${((performance.now() - t0) / 1000).toFixed(1)}s; ${built} built, ${cached} up to date):`);
  for (const [rel, f] of Object.entries(res.manifest.files).sort(([a], [b]) => (a < b ? -1 : 1))) {
    progress.info(`  ${rel.padEnd(22)} ${formatBytes(f.size).padStart(10)}  ${f.sha256.slice(0, 16)}`);
  }
  return 0;
}

async function verify(dir: string): Promise<number> {
  if ((await readManifest(dir)) === null) {
    err(`emberd images verify: no images in ${dir}: run \`emberd images build\``);
    return 1;
  }
  const { checked, problems } = await verifyImages(dir);
  for (const p of problems) {
    err(`${p.file}: ${p.problem === 'missing' ? 'missing' : `${p.problem} mismatch (manifest ${p.expected}, file ${p.actual})`}`);
  }
  if (problems.length > 0) {
    err(`emberd images verify: ${problems.length} of ${checked} files do not match; run \`emberd images build --force\``);
    return 1;
  }
  process.stdout.write(`ok: ${checked} files match ${dir}/manifest.json\n`);
  return 0;
}
