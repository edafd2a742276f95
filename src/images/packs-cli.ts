// `emberd packs ...`: build a custom pack from a spec, import one from an OCI/docker archive or a
// root directory, list the packs of an images dir. Wired into the daemon's main as `packs`.
// The work is in custom/ (docs/packs.md); this file is flags, messages and exit codes:
// 0 done, 2 a problem in what was given (spec, name, archive, flags), 1 anything else.

import { parseArgs } from 'node:util';
import { CustomPackError } from './custom/errors.ts';
import { importPack, type ImportSource } from './custom/import.ts';
import { listPacks } from './custom/list.ts';
import { builtInPackNames } from './custom/names.ts';
import { loadSpec } from './custom/spec.ts';
import { buildPackFromSpec } from './custom/spec-build.ts';
import { ImagesError, defaultImagesDir, packSqfsRel, readManifest } from './manifest.ts';
import { createProgress, type Progress } from './progress.ts';
import type { StepOutcome } from './step-cache.ts';
import { formatBytes } from './util.ts';

export const PACKS_USAGE = `usage: emberd packs build SPEC [--dir DIR] [--force] [--downloads DIR]
       emberd packs import NAME (--oci-archive FILE [--tag TAG] | --rootfs DIR)
                          [--interpreter 'WORD...'] [--env NAME=VALUE]... [--description TEXT]
                          [--dir DIR] [--force] [--downloads DIR]
       emberd packs list [--dir DIR] [--json]

  build    a pack from a spec file (YAML or JSON): a base pack (${builtInPackNames().join(', ')}) plus
           Debian packages, files, environment and interpreter (docs/packs.md)
  import   a pack from an OCI image layout or \`docker save\` tarball, or from a root directory
  list     the packs in the images directory

  --dir DIR          images directory [EMBERD_IMAGES_DIR] (default \${XDG_CACHE_HOME:-~/.cache}/emberd/images)
  --force            rebuild even if up to date
  --downloads DIR    .deb cache [EMBERD_IMAGES_DOWNLOADS] (default DIR/downloads)
  --oci-archive FILE the image tarball (layers applied in order by umoci, whiteouts honoured)
  --tag TAG          which image of an archive holding several
  --rootfs DIR       a directory that is the pack's root
  --interpreter W    argv prefix of \`code\` execs, words split at spaces (default: sh -c)
  --env NAME=VALUE   environment of every exec (repeatable; wins over the image's own ENV)
  --description T    one line for GET /packs
  --json             list as JSON
`;

function err(s: string): void {
  process.stderr.write(s.endsWith('\n') ? s : `${s}\n`);
}

interface Flags {
  dir?: string;
  force?: boolean;
  downloads?: string;
  'oci-archive'?: string;
  tag?: string;
  rootfs?: string;
  interpreter?: string;
  env?: string[];
  description?: string;
  json?: boolean;
  help?: boolean;
}

const FLAGS = {
  build: { force: { type: 'boolean' }, downloads: { type: 'string' } },
  import: {
    force: { type: 'boolean' },
    downloads: { type: 'string' },
    'oci-archive': { type: 'string' },
    tag: { type: 'string' },
    rootfs: { type: 'string' },
    interpreter: { type: 'string' },
    env: { type: 'string', multiple: true },
    description: { type: 'string' },
  },
  list: { json: { type: 'boolean' } },
} as const;

export async function runPacksCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') {
    (sub === undefined ? err : (s: string) => process.stdout.write(s))(PACKS_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'build' && sub !== 'import' && sub !== 'list') {
    err(`emberd packs: unknown command "${sub}"\n\n${PACKS_USAGE}`);
    return 2;
  }
  let values: Flags;
  let positionals: string[];
  try {
    const parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: { dir: { type: 'string' }, help: { type: 'boolean', short: 'h' }, ...FLAGS[sub] },
    });
    values = parsed.values as Flags;
    positionals = parsed.positionals;
  } catch (e) {
    err(`emberd packs ${sub}: ${(e as Error).message}\n\n${PACKS_USAGE}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(PACKS_USAGE);
    return 0;
  }
  const dir = values.dir !== undefined && values.dir !== '' ? values.dir : defaultImagesDir();
  const wantPositionals = sub === 'list' ? 0 : 1;
  if (positionals.length !== wantPositionals) {
    err(`emberd packs ${sub}: ${sub === 'build' ? 'give one SPEC file' : sub === 'import' ? 'give one NAME' : 'takes no arguments'}\n\n${PACKS_USAGE}`);
    return 2;
  }

  try {
    switch (sub) {
      case 'build':
        return await build(positionals[0] as string, dir, values);
      case 'import':
        return await importCommand(positionals[0] as string, dir, values);
      case 'list':
        return await list(dir, values.json === true);
    }
  } catch (e) {
    if (e instanceof CustomPackError) {
      err(`emberd packs ${sub}: ${e.message}`);
      return e.exitCode;
    }
    const msg = e instanceof Error ? e.message : String(e);
    err(`emberd packs ${sub}: ${e instanceof ImagesError ? '' : 'error: '}${msg}`);
    return 1;
  }
}

async function build(specPath: string, dir: string, v: Flags): Promise<number> {
  const t0 = performance.now();
  const spec = await loadSpec(specPath);
  const progress = createProgress();
  const outcome = await buildPackFromSpec(spec, { dir, force: v.force === true, downloadsDir: v.downloads, progress });
  return summary(progress, dir, spec.name, outcome, t0);
}

async function importCommand(name: string, dir: string, v: Flags): Promise<number> {
  const t0 = performance.now();
  const usage = (msg: string): number => {
    err(`emberd packs import: ${msg}\n\n${PACKS_USAGE}`);
    return 2;
  };
  if ((v['oci-archive'] === undefined) === (v.rootfs === undefined)) return usage('give exactly one of --oci-archive FILE and --rootfs DIR');
  if (v.tag !== undefined && v['oci-archive'] === undefined) return usage('--tag goes with --oci-archive');
  const env: Record<string, string> = {};
  for (const kv of v.env ?? []) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(kv);
    if (m === null) return usage(`--env ${JSON.stringify(kv)}: write NAME=VALUE, NAME of letters, digits and _`);
    env[m[1] as string] = m[2] as string;
  }
  const interpreter = v.interpreter?.trim().split(/\s+/).filter((w) => w !== '');
  if (interpreter !== undefined && interpreter.length === 0) return usage('--interpreter needs at least one word, e.g. --interpreter "sh -c"');
  if (v.description !== undefined && (v.description.length > 200 || v.description.includes('\n'))) return usage('--description is one line of at most 200 characters');
  const source: ImportSource = v['oci-archive'] !== undefined ? { kind: 'oci-archive', path: v['oci-archive'], tag: v.tag } : { kind: 'rootfs', path: v.rootfs as string };
  const progress = createProgress();
  const outcome = await importPack({ dir, name, source, interpreter, env, description: v.description, force: v.force === true, downloadsDir: v.downloads, progress });
  return summary(progress, dir, name, outcome, t0);
}

async function summary(progress: Progress, dir: string, name: string, outcome: StepOutcome, t0: number): Promise<number> {
  const m = await readManifest(dir);
  const f = m?.files[packSqfsRel(name)];
  const how = outcome.status === 'built' ? 'built' : 'up to date';
  progress.info(`pack ${name} in ${dir} (${((performance.now() - t0) / 1000).toFixed(1)}s; ${how}):`);
  if (f !== undefined) progress.info(`  ${packSqfsRel(name).padEnd(22)} ${formatBytes(f.size).padStart(10)}  ${f.sha256}`);
  return 0;
}

async function list(dir: string, json: boolean): Promise<number> {
  const packs = await listPacks(dir);
  if (json) {
    process.stdout.write(`${JSON.stringify(packs, null, 2)}\n`);
    return 0;
  }
  if (packs.length === 0) {
    err(`no packs in ${dir}: run \`emberd images build\``);
    return 1;
  }
  const rows = packs.map((p) => [p.name, p.custom ? 'custom' : 'built-in', p.error !== undefined ? 'BROKEN' : formatBytes(p.size), p.interpreter.join(' '), p.error ?? p.description ?? '']);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => (r[i] as string).length), ['NAME', 'KIND', 'SIZE', 'INTERPRETER'][i]!.length));
  const line = (r: string[]): string => `${r.slice(0, 4).map((c, i) => c.padEnd(widths[i] as number)).join('  ')}  ${r[4]}`.trimEnd();
  process.stdout.write(`${[line(['NAME', 'KIND', 'SIZE', 'INTERPRETER', 'DESCRIPTION']), ...rows.map(line)].join('\n')}\n`);
  return 0;
}
