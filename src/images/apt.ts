// Package resolution and download through the host's apt (Debian bookworm). Never installs
// anything on the host: resolution runs against an empty dpkg status, downloads land in a
// directory we own, extraction is `dpkg-deb --fsys-tarfile | tar -x` into a tree we own.

import { access, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from './manifest.ts';
import { run, runPipe } from './util.ts';

export interface AptPackage {
  name: string;
  version: string;
  arch: string;
  /** sha256 of the .deb as published in the (signed) apt index */
  sha256: string;
  size: number;
  essential: boolean;
  depends: string;
  preDepends: string;
  provides: string;
}

const APT_ENV: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' };

/**
 * Options for every apt call: ignore the host's installed packages (and never lock or touch
 * them). With `cacheDir`, apt keeps its binary package cache there: hosts configured with
 * docker-clean (Dir::Cache::pkgcache "") otherwise re-parse all lists on every call (~0.8 s each).
 */
export function aptOptions(cacheDir?: string): string[] {
  const o = ['-o', 'Dir::State::status=/dev/null', '-o', 'Debug::NoLocking=1'];
  if (cacheDir !== undefined) {
    o.push('-o', `Dir::Cache::pkgcache=${cacheDir}/pkgcache.bin`, '-o', `Dir::Cache::srcpkgcache=${cacheDir}/srcpkgcache.bin`);
  }
  return o;
}
const DEFAULT_OPTS = aptOptions();

function sandboxOpts(): string[] {
  // As root apt drops to _apt for downloads, which cannot write into a root-owned cache dir.
  return process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
}

export function parseControlRecords(text: string): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    if (block.trim() === '') continue;
    const rec = new Map<string, string>();
    let last: string | null = null;
    for (const line of block.split('\n')) {
      if (/^\s/.test(line) && last !== null) {
        rec.set(last, `${rec.get(last) ?? ''}\n${line.trim()}`);
        continue;
      }
      const i = line.indexOf(':');
      if (i <= 0) continue;
      last = line.slice(0, i);
      rec.set(last, line.slice(i + 1).trim());
    }
    out.push(rec);
  }
  return out;
}

function toPackage(rec: Map<string, string>): AptPackage {
  const get = (k: string): string => rec.get(k) ?? '';
  const p: AptPackage = {
    name: get('Package'),
    version: get('Version'),
    arch: get('Architecture'),
    sha256: get('SHA256'),
    size: parseInt(get('Size') || '0', 10),
    essential: get('Essential').toLowerCase() === 'yes',
    depends: get('Depends'),
    preDepends: get('Pre-Depends'),
    provides: get('Provides'),
  };
  if (!p.name || !p.version || !p.arch || !/^[0-9a-f]{64}$/.test(p.sha256)) {
    throw new Error(`apt-cache show returned an incomplete record for ${p.name || '?'}`);
  }
  return p;
}

/** `apt-cache show` for exact `name=version` specs (or bare names: the candidate). */
export async function aptShow(specs: readonly string[], opts: readonly string[] = DEFAULT_OPTS): Promise<AptPackage[]> {
  if (specs.length === 0) return [];
  const { stdout } = await run('apt-cache', [...opts, 'show', '--no-all-versions', ...specs], { env: APT_ENV });
  const seen = new Map<string, AptPackage>();
  for (const rec of parseControlRecords(stdout.toString('utf8'))) {
    const p = toPackage(rec);
    const key = `${p.name}=${p.version}`;
    if (!seen.has(key)) seen.set(key, p); // same version listed by two suites: identical record
  }
  return [...seen.values()];
}

/** Resolves a kernel metapackage (e.g. linux-image-cloud-amd64) to the real image package. */
export async function resolveKernelPackage(meta: string, opts: readonly string[] = DEFAULT_OPTS): Promise<AptPackage> {
  const { stdout } = await run('apt-cache', [...opts, 'depends', '--no-recommends', '--no-suggests', meta], { env: APT_ENV });
  let real: string | undefined;
  for (const line of stdout.toString('utf8').split('\n')) {
    const m = /^\s*\|?Depends:\s*(linux-image-\S+)/.exec(line);
    if (m !== null) {
      real = m[1];
      break;
    }
  }
  if (real === undefined) throw new Error(`cannot resolve ${meta}: no linux-image-* dependency (is \`apt-get update\` done?)`);
  const [pkg] = await aptShow([real], opts);
  if (pkg === undefined) throw new Error(`apt-cache show ${real}: no record`);
  return pkg;
}

/** "a (>= 1) | b:any, c" -> [["a","b"],["c"]] */
export function parseDepends(field: string): string[][] {
  if (field.trim() === '') return [];
  return field.split(',').map((group) =>
    group
      .split('|')
      .map((alt) => alt.trim().split(/[\s(\[]/)[0] ?? '')
      .map((n) => n.replace(/:(any|native|amd64)$/, ''))
      .filter((n) => n !== ''),
  );
}

/**
 * Dependency closure of `roots` (Depends + Pre-Depends, no Recommends) as apt would install it on
 * an empty system, minus packages that are only there because some package names an Essential
 * package (e.g. readline-common -> "dpkg | install-info" drags in dpkg, tar, libselinux1...).
 * Edges to Essential packages are ignored; a root may still be Essential.
 */
export async function resolveClosure(roots: readonly string[], opts: readonly string[] = DEFAULT_OPTS): Promise<AptPackage[]> {
  return (await resolveClosures({ all: roots }, opts))['all'] as AptPackage[];
}

/**
 * resolveClosure for several root sets with one apt solver run over their union (apt calls are
 * slow); each set's closure is then what is reachable from its own roots.
 */
export async function resolveClosures(
  groups: Readonly<Record<string, readonly string[]>>,
  opts: readonly string[] = DEFAULT_OPTS,
): Promise<Record<string, AptPackage[]>> {
  const union = [...new Set(Object.values(groups).flat())];
  if (union.length === 0) return {};
  const { stdout } = await run('apt-get', [...opts, 'install', '-s', '-qq', '--no-install-recommends', ...union], {
    env: APT_ENV,
  });
  const specs: string[] = [];
  for (const line of stdout.toString('utf8').split('\n')) {
    const m = /^Inst (\S+) \((\S+) /.exec(line);
    if (m !== null) specs.push(`${m[1]}=${m[2]}`);
  }
  if (specs.length === 0) throw new Error(`apt-get -s install ${union.join(' ')}: nothing to install?`);
  const pkgs = await aptShow(specs, opts);
  const byName = new Map<string, AptPackage>();
  for (const p of pkgs) byName.set(p.name, p);
  const provider = new Map<string, AptPackage>();
  for (const p of pkgs) {
    for (const [v] of parseDepends(p.provides)) if (v !== undefined && !provider.has(v)) provider.set(v, p);
  }
  const find = (n: string): AptPackage | undefined => byName.get(n) ?? provider.get(n);

  const out: Record<string, AptPackage[]> = {};
  for (const [group, roots] of Object.entries(groups)) {
    const keep = new Set<string>();
    const stack: string[] = [];
    for (const r of roots) {
      const p = find(r);
      if (p === undefined) throw new Error(`apt did not select root package ${r}`);
      stack.push(p.name);
    }
    while (stack.length > 0) {
      const name = stack.pop() as string;
      if (keep.has(name)) continue;
      keep.add(name);
      const p = byName.get(name) as AptPackage;
      for (const alts of [...parseDepends(p.preDepends), ...parseDepends(p.depends)]) {
        const cands = alts.map(find);
        if (cands.some((a) => a?.essential === true)) continue; // assumed present on Debian; not needed here
        const chosen = cands.find((a) => a !== undefined);
        if (chosen === undefined) throw new Error(`${p.name} depends on ${alts.join(' | ')}, which apt did not select`);
        stack.push(chosen.name);
      }
    }
    out[group] = pkgs.filter((p) => keep.has(p.name)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  return out;
}

/** The file name `apt-get download` uses. */
export function debFileName(p: Pick<AptPackage, 'name' | 'version' | 'arch'>): string {
  return `${p.name}_${p.version.replaceAll(':', '%3a')}_${p.arch}.deb`;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes sure every package is in `downloadsDir` with the sha256 apt publishes. Already-present
 * verified files are reused (works offline). Returns the absolute .deb paths, same order.
 */
export async function ensureDownloaded(
  pkgs: readonly AptPackage[],
  downloadsDir: string,
  onDownload?: (count: number, bytes: number) => void,
): Promise<string[]> {
  await mkdir(downloadsDir, { recursive: true });
  const paths = pkgs.map((p) => join(downloadsDir, debFileName(p)));
  const missing: AptPackage[] = [];
  for (const [i, p] of pkgs.entries()) {
    const path = paths[i] as string;
    if (await exists(path)) {
      if ((await sha256File(path)) === p.sha256) continue;
      await rm(path, { force: true });
    }
    missing.push(p);
  }
  if (missing.length > 0) {
    onDownload?.(missing.length, missing.reduce((s, p) => s + p.size, 0));
    // Download into a private directory and rename verified files in, so concurrent builds that
    // share the downloads cache never see (or reuse) a half-written .deb.
    const partial = await mkdtemp(join(downloadsDir, '.partial-'));
    try {
      await run('apt-get', ['download', '-q', ...sandboxOpts(), ...missing.map((p) => `${p.name}=${p.version}`)], {
        cwd: partial,
        env: APT_ENV,
      });
      for (const p of missing) {
        const tmp = join(partial, debFileName(p));
        if (!(await exists(tmp))) throw new Error(`apt-get download did not produce ${debFileName(p)}`);
        const h = await sha256File(tmp);
        if (h !== p.sha256) throw new Error(`${debFileName(p)}: sha256 ${h} does not match the apt index (${p.sha256})`);
        await rename(tmp, join(downloadsDir, debFileName(p)));
      }
    } finally {
      await rm(partial, { recursive: true, force: true });
    }
  }
  return paths;
}

/**
 * Extracts a .deb's data into `dest`, keeping existing directory symlinks (so a merged-/usr
 * skeleton with bin -> usr/bin absorbs bookworm's /bin, /lib, /lib64, /sbin contents).
 */
export async function extractDeb(deb: string, dest: string, members: readonly string[] = []): Promise<void> {
  await mkdir(dest, { recursive: true });
  await runPipe(
    ['dpkg-deb', ['--fsys-tarfile', deb]],
    ['tar', ['-x', '--keep-directory-symlink', '--no-same-owner', '--same-permissions', '--wildcards', '-C', dest, ...members]],
  );
}
