// Shared helpers for the custom pack tests (not used at runtime): a private images dir holding
// copies of built packs, and OCI / docker-save archives written by hand from layer trees.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MANIFEST_NAME, defaultImagesDir, packJsonRel, packSqfsRel, type Manifest } from '../manifest.ts';
import { MT, REF_NAME } from './oci-layout.ts';

/**
 * A fresh images dir for building custom packs into: the kernel and initramfs linked from the
 * built images (`src`, default the default images dir), the named packs copied (so a rebuild of
 * the shared images meanwhile cannot change them under the test), a manifest of just those.
 */
export function privateImagesWithPacks(packs: readonly string[], src = process.env['EMBERD_IMAGES_DIR'] || defaultImagesDir()): string {
  const dir = mkdtempSync(join(tmpdir(), 'emb-packs-'));
  const m = JSON.parse(readFileSync(join(src, MANIFEST_NAME), 'utf8')) as Manifest;
  const keep = new Set(['kernel/vmlinux', 'kernel/bzImage', 'initramfs.cpio', ...packs.flatMap((p) => [packSqfsRel(p), packJsonRel(p)])]);
  const steps = new Set(['kernel', 'initramfs', ...packs.map((p) => `pack:${p}`)]);
  m.files = Object.fromEntries(Object.entries(m.files).filter(([f]) => keep.has(f)));
  m.steps = Object.fromEntries(Object.entries(m.steps).filter(([s]) => steps.has(s)));
  m.inputs.packs = Object.fromEntries(Object.entries(m.inputs.packs).filter(([p]) => packs.includes(p)));
  symlinkSync(join(src, 'kernel'), join(dir, 'kernel'));
  symlinkSync(join(src, 'initramfs.cpio'), join(dir, 'initramfs.cpio'));
  mkdirSync(join(dir, 'packs'));
  for (const p of packs) for (const rel of [packSqfsRel(p), packJsonRel(p)]) copyFileSync(join(src, rel), join(dir, rel));
  writeFileSync(join(dir, MANIFEST_NAME), JSON.stringify(m, null, 2));
  return dir;
}

/** Why tests that need built packs (`packs`) or a tool cannot run here, or false. */
export function customPackSkipReason(opts: { packs?: readonly string[]; tools?: readonly string[] } = {}): string | false {
  for (const t of opts.tools ?? []) if (spawnSync(t, ['--version']).error !== undefined) return `${t} not installed (scripts/setup.sh installs it)`;
  const src = process.env['EMBERD_IMAGES_DIR'] || defaultImagesDir();
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(join(src, MANIFEST_NAME), 'utf8')) as Manifest;
  } catch {
    return `no built images in ${src} (scripts/setup.sh)`;
  }
  for (const p of opts.packs ?? []) if (m.steps[`pack:${p}`] === undefined) return `pack ${p} is not built in ${src}`;
  return false;
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A tar of `entries` (paths relative to `dir`), as a layer is: no "./" prefix, owner root. */
export function tarLayer(dir: string, entries: readonly string[]): Buffer {
  const r = spawnSync('tar', ['-C', dir, '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', ...entries], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`tar: ${r.stderr.toString()}`);
  return r.stdout;
}

export interface TestImage {
  layers: Buffer[];
  tag?: string;
  env?: string[];
  architecture?: string;
  /** gzip the layers (OCI media type +gzip) */
  gzip?: boolean;
  /** Docker's media types instead of OCI's */
  dockerTypes?: boolean;
}

/** An OCI image layout tarball holding `images`, written to `out`. */
export function writeOciArchive(out: string, images: readonly TestImage[]): string {
  const layout = mkdtempSync(join(tmpdir(), 'emb-oci-'));
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  const put = (b: Buffer): string => {
    const d = sha(b);
    writeFileSync(join(layout, 'blobs/sha256', d.slice(7)), b);
    return d;
  };
  const manifests = images.map((img) => {
    const blobs = img.layers.map((l) => (img.gzip === true ? spawnSync('gzip', ['-n', '-c'], { input: l, maxBuffer: 1 << 30 }).stdout : l));
    const layerType = img.dockerTypes === true ? (img.gzip === true ? MT.dockerLayerGzip : MT.dockerLayer) : img.gzip === true ? MT.ociLayerGzip : MT.ociLayer;
    const config = Buffer.from(
      JSON.stringify({ architecture: img.architecture ?? 'amd64', os: 'linux', config: { Env: img.env ?? [] }, rootfs: { type: 'layers', diff_ids: img.layers.map(sha) } }),
    );
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: img.dockerTypes === true ? MT.dockerManifest : MT.ociManifest,
        config: { mediaType: img.dockerTypes === true ? MT.dockerConfig : MT.ociConfig, digest: put(config), size: config.length },
        layers: blobs.map((b) => ({ mediaType: layerType, digest: put(b), size: b.length })),
      }),
    );
    return {
      mediaType: img.dockerTypes === true ? MT.dockerManifest : MT.ociManifest,
      digest: put(manifest),
      size: manifest.length,
      ...(img.tag !== undefined && { annotations: { [REF_NAME]: img.tag } }),
    };
  });
  writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  tarDir(layout, out);
  return out;
}

/** A `docker save` tarball in Docker's own (pre-25) format: manifest.json, <id>/layer.tar, <id>.json. */
export function writeDockerSaveArchive(out: string, img: TestImage & { repoTag?: string }): string {
  const root = mkdtempSync(join(tmpdir(), 'emb-docker-'));
  const layerPaths = img.layers.map((l) => {
    const id = sha(l).slice(7);
    mkdirSync(join(root, id));
    writeFileSync(join(root, id, 'layer.tar'), l);
    return `${id}/layer.tar`;
  });
  const config = Buffer.from(JSON.stringify({ architecture: img.architecture ?? 'amd64', os: 'linux', config: { Env: img.env ?? [] }, rootfs: { type: 'layers', diff_ids: img.layers.map(sha) } }));
  const configName = `${sha(config).slice(7)}.json`;
  writeFileSync(join(root, configName), config);
  writeFileSync(join(root, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: img.repoTag !== undefined ? [img.repoTag] : null, Layers: layerPaths }]));
  tarDir(root, out);
  return out;
}

/** Tars `dir`'s contents into `out`, then removes `dir`. */
function tarDir(dir: string, out: string): void {
  const r = spawnSync('tar', ['-C', dir, '-cf', out, '.']);
  rmSync(dir, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`tar: ${r.stderr.toString()}`);
}
