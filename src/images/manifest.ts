// The on-disk contract between `emberd images build` and the daemon: where the images live, what
// manifest.json looks like, and a typed loader that turns it into absolute paths.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export const MANIFEST_FORMAT = 1;
export const MANIFEST_NAME = 'manifest.json';

/** Relative paths (inside the images dir) of the fixed outputs. */
export const VMLINUX_REL = 'kernel/vmlinux';
export const BZIMAGE_REL = 'kernel/bzImage';
export const INITRAMFS_REL = 'initramfs.cpio';
export const packSqfsRel = (name: string): string => `packs/${name}.sqfs`;
export const packJsonRel = (name: string): string => `packs/${name}.json`;

export interface FileRecord {
  sha256: string;
  size: number;
}

/** A Debian package that went into an output. */
export interface DebRecord {
  name: string;
  version: string;
  arch: string;
  /** sha256 of the .deb file (as published in the apt index) */
  sha256: string;
}

export interface KernelInputs {
  /** the metapackage that was resolved, e.g. linux-image-cloud-amd64 */
  meta: string;
  /** the real package, e.g. linux-image-6.1.0-56-cloud-amd64 */
  package: string;
  version: string;
  /** `uname -r` of the kernel, e.g. 6.1.0-56-cloud-amd64 */
  release: string;
  debSha256: string;
}

export interface InitInputs {
  sha256: string;
  size: number;
  /** where the binary was taken from (repo-relative when inside the repo) */
  source: string;
}

export interface StepRecord {
  /** sha256 over everything the step's outputs depend on; equal key + files present = skip */
  key: string;
  files: string[];
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  /** ISO time of the last build that changed this manifest (the only non-reproducible field) */
  created: string;
  inputs: {
    kernel?: KernelInputs;
    init?: InitInputs;
    initramfsModules?: string[];
    packs: Record<string, { packages: DebRecord[] }>;
  };
  steps: Record<string, StepRecord>;
  files: Record<string, FileRecord>;
}

/** packs/<name>.json: everything the daemon needs to offer a language pack. */
export interface PackMeta {
  format: typeof MANIFEST_FORMAT;
  name: string;
  /** argv prefix; the guest appends the code as the last argument (also /etc/emberd/interpreter in the pack) */
  interpreter: string[];
  /** file name of the squashfs next to this json */
  image: string;
  size: number;
  sha256: string;
  packages: { name: string; version: string }[];
}

export interface PackImage {
  name: string;
  /** absolute path of packs/<name>.sqfs */
  path: string;
  interpreter: string[];
  size: number;
  sha256: string;
  packages: { name: string; version: string }[];
}

/** What the daemon boots from. All paths absolute. */
export interface ImageSet {
  dir: string;
  kernel: {
    /** uncompressed ELF with PVH entry: preferred for QEMU microvm (-kernel vmlinux) */
    vmlinux: string;
    bzImage: string;
    package: string;
    version: string;
    release: string;
  };
  initramfs: string;
  /** sha256 of the emberd-init baked into the initramfs */
  initSha256: string;
  /** modules in /lib/modules of the initramfs, in load order (also /lib/modules/load-order) */
  initramfsModules: string[];
  packs: Record<string, PackImage>;
  manifest: Manifest;
}

export class ImagesError extends Error {
  readonly code: 'IMAGES_NOT_BUILT' | 'IMAGES_INVALID';
  constructor(code: 'IMAGES_NOT_BUILT' | 'IMAGES_INVALID', message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ImagesError';
    this.code = code;
  }
}

/** `$EMBERD_IMAGES_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/emberd/images`. */
export function defaultImagesDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env['EMBERD_IMAGES_DIR'];
  if (explicit !== undefined && explicit !== '') return resolve(explicit);
  const xdg = env['XDG_CACHE_HOME'];
  const cache = xdg !== undefined && xdg !== '' ? xdg : join(env['HOME'] ?? homedir(), '.cache');
  return resolve(cache, 'emberd', 'images');
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads manifest.json; null if absent. Throws ImagesError on a corrupt or foreign-format file. */
export async function readManifest(dir: string): Promise<Manifest | null> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_NAME), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new ImagesError('IMAGES_INVALID', `${join(dir, MANIFEST_NAME)} is not valid JSON; rebuild with \`emberd images build --force\``, { cause: e });
  }
  if (!isRecord(m) || m['format'] !== MANIFEST_FORMAT || !isRecord(m['files']) || !isRecord(m['steps']) || !isRecord(m['inputs'])) {
    throw new ImagesError('IMAGES_INVALID', `${join(dir, MANIFEST_NAME)} has an unsupported format; rebuild with \`emberd images build --force\``);
  }
  const inputs = m['inputs'];
  if (!isRecord(inputs['packs'])) inputs['packs'] = {};
  return m as unknown as Manifest;
}

/**
 * Loads the images the daemon needs. Cheap: reads manifest.json and the pack jsons and stats the
 * files (size check); it does not hash (see verifyImages). Throws ImagesError('IMAGES_NOT_BUILT')
 * with a message telling the user to run `emberd images build` when something is missing.
 */
export async function loadManifest(dir: string = defaultImagesDir()): Promise<ImageSet> {
  dir = resolve(dir);
  const m = await readManifest(dir);
  const hint = `run \`emberd images build${dir === defaultImagesDir() ? '' : ` --dir ${dir}`}\``;
  if (m === null) throw new ImagesError('IMAGES_NOT_BUILT', `no images in ${dir}: ${hint}`);

  const need = async (rel: string): Promise<string> => {
    const rec = m.files[rel];
    if (rec === undefined) throw new ImagesError('IMAGES_NOT_BUILT', `${rel} has not been built in ${dir}: ${hint}`);
    const abs = join(dir, rel);
    let size: number;
    try {
      size = (await stat(abs)).size;
    } catch {
      throw new ImagesError('IMAGES_NOT_BUILT', `${abs} is missing: ${hint}`);
    }
    if (size !== rec.size) {
      throw new ImagesError('IMAGES_INVALID', `${abs} has size ${size}, manifest says ${rec.size}: ${hint} --force`);
    }
    return abs;
  };

  const k = m.inputs.kernel;
  if (k === undefined) throw new ImagesError('IMAGES_NOT_BUILT', `no kernel in ${dir}: ${hint}`);
  const vmlinux = await need(VMLINUX_REL);
  const bzImage = await need(BZIMAGE_REL);
  const initramfs = await need(INITRAMFS_REL);
  const init = m.inputs.init;
  if (init === undefined) throw new ImagesError('IMAGES_NOT_BUILT', `no initramfs in ${dir}: ${hint}`);

  const packs: Record<string, PackImage> = {};
  for (const rel of Object.keys(m.files).sort()) {
    const match = /^packs\/([^/]+)\.json$/.exec(rel);
    if (match === null) continue;
    const name = match[1] as string;
    const jsonPath = await need(rel);
    const meta = JSON.parse(await readFile(jsonPath, 'utf8')) as PackMeta;
    const path = await need(packSqfsRel(name));
    const fileRec = m.files[packSqfsRel(name)];
    if (fileRec === undefined || fileRec.sha256 !== meta.sha256) {
      throw new ImagesError('IMAGES_INVALID', `${jsonPath} does not match the manifest: ${hint} --force`);
    }
    packs[name] = { name, path, interpreter: meta.interpreter, size: meta.size, sha256: meta.sha256, packages: meta.packages };
  }

  return {
    dir,
    kernel: { vmlinux, bzImage, package: k.package, version: k.version, release: k.release },
    initramfs,
    initSha256: init.sha256,
    initramfsModules: m.inputs.initramfsModules ?? [],
    packs,
    manifest: m,
  };
}

export interface VerifyProblem {
  file: string;
  problem: 'missing' | 'size' | 'sha256';
  expected: string;
  actual: string;
}

/** Re-hashes every file listed in the manifest. Empty array = all good. */
export async function verifyImages(dir: string): Promise<{ checked: number; problems: VerifyProblem[] }> {
  const m = await readManifest(dir);
  if (m === null) throw new ImagesError('IMAGES_NOT_BUILT', `no ${MANIFEST_NAME} in ${dir}`);
  const problems: VerifyProblem[] = [];
  const rels = Object.keys(m.files).sort();
  for (const rel of rels) {
    const rec = m.files[rel] as FileRecord;
    const abs = join(dir, rel);
    let size: number;
    try {
      size = (await stat(abs)).size;
    } catch {
      problems.push({ file: rel, problem: 'missing', expected: `${rec.size} bytes`, actual: 'missing' });
      continue;
    }
    if (size !== rec.size) {
      problems.push({ file: rel, problem: 'size', expected: String(rec.size), actual: String(size) });
      continue;
    }
    const h = await sha256File(abs);
    if (h !== rec.sha256) problems.push({ file: rel, problem: 'sha256', expected: rec.sha256, actual: h });
  }
  return { checked: rels.length, problems };
}
