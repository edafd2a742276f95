// The on-disk contract between `emberd images build` and the daemon: where the images live, what
// manifest.json looks like, and a typed loader that turns it into absolute paths.

import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, statSync } from 'node:fs';
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
  /** Optional: one line for GET /packs. */
  description?: string;
  /** Optional: variables every exec of the pack's sandboxes inherits (a sandbox's env wins). */
  env?: Record<string, string>;
  /** Optional: built by `emberd packs build|import`, not by `emberd images build`. */
  custom?: boolean;
}

/** A built language pack, as the sandbox manager uses it (structurally its PackImage). */
export interface PackImage {
  name: string;
  /** absolute path of packs/<name>.sqfs (the read-only root disk) */
  image: string;
  /** argv prefix for `code` requests; the guest appends the code (also /etc/emberd/interpreter) */
  interpreter: string[];
  size: number;
  sha256: string;
  packages: { name: string; version: string }[];
  description?: string;
  env?: Record<string, string>;
  custom?: boolean;
}

/** A pack listed in the manifest that cannot be used, and why (the others still load). */
export interface BrokenPack { name: string; error: string }

/** What the daemon boots from. All paths absolute. */
export interface ImageSet {
  dir: string;
  /** uncompressed ELF vmlinux with the PVH entry: what QEMU microvm boots (-kernel) */
  kernel: string;
  /** the same kernel as Debian ships it (LZ4 bzImage), for VMMs/machines that want one */
  bzImage: string;
  kernelInfo: { package: string; version: string; release: string };
  /** uncompressed newc initramfs (-initrd) */
  initramfs: string;
  /** sha256 of the emberd-init baked into the initramfs as /init */
  initSha256: string;
  /** modules in the initramfs /lib/modules, in load order (also /lib/modules/load-order) */
  initramfsModules: string[];
  /** by pack name ("python", "shell") */
  packs: Map<string, PackImage>;
  /** packs whose files are missing or do not match their record: left out of `packs` */
  brokenPacks: BrokenPack[];
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

function parseManifest(text: string, file: string): Manifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new ImagesError('IMAGES_INVALID', `${file} is not valid JSON; rebuild with \`emberd images build --force\``, { cause: e });
  }
  if (!isRecord(m) || m['format'] !== MANIFEST_FORMAT || !isRecord(m['files']) || !isRecord(m['steps']) || !isRecord(m['inputs'])) {
    throw new ImagesError('IMAGES_INVALID', `${file} has an unsupported format; rebuild with \`emberd images build --force\``);
  }
  const inputs = m['inputs'];
  if (!isRecord(inputs['packs'])) inputs['packs'] = {};
  return m as unknown as Manifest;
}

/** Reads manifest.json; null if absent. Throws ImagesError on a corrupt or foreign-format file. */
export async function readManifest(dir: string): Promise<Manifest | null> {
  const file = join(dir, MANIFEST_NAME);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return parseManifest(text, file);
}

/**
 * Loads the images the daemon boots from (synchronous: it runs once at startup). Cheap: reads
 * manifest.json and the pack jsons and stats each file against the recorded size; it does not
 * hash (that is `emberd images verify` / verifyImages). `dir` defaults to defaultImagesDir().
 * Throws ImagesError (code IMAGES_NOT_BUILT or IMAGES_INVALID) whose message says what to run.
 */
export function loadImageSet(dir?: string): ImageSet {
  dir = resolve(dir ?? defaultImagesDir());
  const hint = `run \`emberd images build${dir === defaultImagesDir() ? '' : ` --dir ${dir}`}\``;
  const file = join(dir, MANIFEST_NAME);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ImagesError('IMAGES_NOT_BUILT', `no images in ${dir}: ${hint}`);
    throw e;
  }
  const m = parseManifest(text, file);

  const need = (rel: string): string => {
    const rec = m.files[rel];
    if (rec === undefined) throw new ImagesError('IMAGES_NOT_BUILT', `${rel} has not been built in ${dir}: ${hint}`);
    const abs = join(dir, rel);
    let size: number;
    try {
      size = statSync(abs).size;
    } catch {
      throw new ImagesError('IMAGES_NOT_BUILT', `${abs} is missing: ${hint}`);
    }
    if (size !== rec.size) {
      throw new ImagesError('IMAGES_INVALID', `${abs} has size ${size}, the manifest says ${rec.size}: ${hint} --force`);
    }
    return abs;
  };

  const k = m.inputs.kernel;
  const init = m.inputs.init;
  if (k === undefined) throw new ImagesError('IMAGES_NOT_BUILT', `no kernel in ${dir}: ${hint}`);
  if (init === undefined) throw new ImagesError('IMAGES_NOT_BUILT', `no initramfs in ${dir}: ${hint}`);
  const kernel = need(VMLINUX_REL);
  const bzImage = need(BZIMAGE_REL);
  const initramfs = need(INITRAMFS_REL);

  // One broken pack (a custom one half-written, a file deleted) must not take the others down.
  const packs = new Map<string, PackImage>();
  const brokenPacks: BrokenPack[] = [];
  for (const rel of Object.keys(m.files).sort()) {
    const match = /^packs\/([^/]+)\.json$/.exec(rel);
    if (match === null) continue;
    const name = match[1] as string;
    try {
      packs.set(name, loadPack(name, need(rel), need(packSqfsRel(name)), m.files[packSqfsRel(name)]?.sha256, hint));
    } catch (e) {
      brokenPacks.push({ name, error: (e as Error).message });
    }
  }

  return {
    dir,
    kernel,
    bzImage,
    kernelInfo: { package: k.package, version: k.version, release: k.release },
    initramfs,
    initSha256: init.sha256,
    initramfsModules: m.inputs.initramfsModules ?? [],
    packs,
    brokenPacks,
    manifest: m,
  };
}

/** One pack's json, checked against the manifest's record of its image. */
function loadPack(name: string, jsonPath: string, image: string, imageSha256: string | undefined, hint: string): PackImage {
  let meta: PackMeta;
  try {
    meta = JSON.parse(readFileSync(jsonPath, 'utf8')) as PackMeta;
  } catch (e) {
    throw new ImagesError('IMAGES_INVALID', `${jsonPath} is not valid JSON: ${hint} --force`, { cause: e });
  }
  if (imageSha256 !== meta.sha256 || !Array.isArray(meta.interpreter)) {
    throw new ImagesError('IMAGES_INVALID', `${jsonPath} does not match the manifest: ${hint} --force`);
  }
  return {
    name,
    image,
    interpreter: meta.interpreter,
    size: meta.size,
    sha256: meta.sha256,
    packages: meta.packages,
    ...(meta.description !== undefined && { description: meta.description }),
    ...(meta.env !== undefined && { env: meta.env }),
    ...(meta.custom !== undefined && { custom: meta.custom }),
  };
}

/** Async spelling of loadImageSet. */
export async function loadManifest(dir?: string): Promise<ImageSet> {
  return loadImageSet(dir);
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
