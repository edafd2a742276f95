// An image tarball made ready for umoci: extracted, a Docker-format `docker save` converted to an
// OCI layout (docker-archive.ts), the one image to import chosen (by --tag, or the only one; from
// a multi-platform index the linux/amd64 one), Docker media types rewritten to their OCI names
// (umoci reads OCI's only), zstd layers decompressed (umoci 0.4.7 reads plain and gzip ones), and
// index.json naming it IMPORT_REF.

import { mkdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from '../manifest.ts';
import { CommandError, run } from '../util.ts';
import { dockerArchiveToOci } from './docker-archive.ts';
import { CustomPackError } from './errors.ts';
import { IMAGE_NAME, MT, REF_NAME, blobPath, readJsonBlob, writeIndex, writeJsonBlob, type Descriptor, type ImageConfig, type ImageManifest, type Index } from './oci-layout.ts';

/** The name index.json gives the chosen image (what umoci is asked to unpack). */
export const IMPORT_REF = 'emberd-import';

export interface OpenedImage {
  /** the OCI layout directory */
  layout: string;
  /** the image's names in the archive (tags), or its manifest digest */
  ref: string;
  config: ImageConfig;
  /** the image config's Env */
  env: Record<string, string>;
}

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64' };

const LAYER_TYPES: Record<string, string> = {
  [MT.ociLayer]: MT.ociLayer,
  [MT.ociLayerGzip]: MT.ociLayerGzip,
  [MT.dockerLayer]: MT.ociLayer,
  [MT.dockerLayerGzip]: MT.ociLayerGzip,
};

interface Candidate {
  desc: Descriptor;
  names: string[];
}

const invalid = (msg: string): CustomPackError => new CustomPackError('PACK_IMPORT_INVALID', msg);

/** Extracts `archive` into `layout` (a fresh directory) and prepares the image to import. */
export async function openImageArchive(archive: string, layout: string, tag?: string): Promise<OpenedImage> {
  try {
    await mkdir(layout, { recursive: true });
    await run('tar', ['-x', '-f', archive, '-C', layout, '--no-same-owner', '--no-same-permissions']);
  } catch (e) {
    throw invalid(`${archive} is not a tar archive: ${e instanceof CommandError ? e.stderr.trim().split('\n').at(-1) : (e as Error).message}`);
  }
  const has = async (f: string): Promise<boolean> => (await stat(join(layout, f)).catch(() => null)) !== null;
  if (!(await has('index.json'))) {
    if (!(await has('manifest.json'))) throw invalid(`${archive} is neither an OCI image layout (no index.json) nor a \`docker save\` archive (no manifest.json)`);
    await dockerArchiveToOci(layout);
  }
  let index: Index;
  try {
    index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as Index;
    if (!Array.isArray(index.manifests)) throw new Error('no manifests');
  } catch (e) {
    throw invalid(`index.json of ${archive} is unusable: ${(e as Error).message}`);
  }

  const chosen = choose(await candidates(layout, index, []), tag, archive);
  const manifest = await readJsonBlob<ImageManifest>(layout, chosen.desc, 'image manifest');
  const config = await readJsonBlob<ImageConfig>(layout, manifest.config, 'image config');
  checkPlatform(config);
  const desc = await toOciManifest(layout, manifest, chosen.desc);
  await writeIndex(layout, desc, IMPORT_REF);

  const env: Record<string, string> = {};
  for (const kv of config.config?.Env ?? []) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return { layout, ref: chosen.names[0] ?? chosen.desc.digest, config, env };
}

const isIndex = (mt: string | undefined): boolean => mt === MT.ociIndex || mt === MT.dockerList;
const hostPlatform = (p: Descriptor['platform']): boolean =>
  p === undefined || ((p.os === undefined || p.os === 'linux') && (p.architecture === undefined || p.architecture === GOARCH[process.arch]));

/** The image manifests an index leads to (nested indexes: this host's platform only). */
async function candidates(layout: string, index: Index, names: string[], depth = 0): Promise<Candidate[]> {
  if (depth > 4) throw invalid('image indexes nested too deep');
  const out: Candidate[] = [];
  for (const d of index.manifests) {
    const own = [d.annotations?.[IMAGE_NAME], d.annotations?.[REF_NAME]].filter((n): n is string => n !== undefined);
    if (isIndex(d.mediaType)) {
      const nested = await readJsonBlob<Index>(layout, d, 'image index');
      out.push(...(await candidates(layout, nested, [...names, ...own], depth + 1)));
    } else if (hostPlatform(d.platform) && (d.mediaType === undefined || d.mediaType === MT.ociManifest || d.mediaType === MT.dockerManifest)) {
      out.push({ desc: d, names: [...own, ...names] });
    }
  }
  return out;
}

function choose(all: Candidate[], tag: string | undefined, archive: string): Candidate {
  const named = tag === undefined ? all : all.filter((c) => c.names.some((n) => n === tag || n.endsWith(`:${tag}`)));
  const byDigest = new Map<string, Candidate>();
  for (const c of named) byDigest.set(c.desc.digest, { desc: c.desc, names: [...(byDigest.get(c.desc.digest)?.names ?? []), ...c.names] });
  const list = [...byDigest.values()];
  const describe = (cs: Candidate[]): string => cs.map((c) => c.names[0] ?? c.desc.digest.slice(0, 19)).join(', ');
  if (list.length === 1) return list[0] as Candidate;
  if (list.length === 0 && tag !== undefined) throw invalid(`${archive} has no image tagged ${tag} (it has: ${describe(all) || 'none'})`);
  if (list.length === 0) throw invalid(`${archive} holds no image for linux/${GOARCH[process.arch] ?? process.arch}`);
  throw invalid(`${archive} holds ${list.length} images (${describe(list)}): pick one with --tag`);
}

function checkPlatform(config: ImageConfig): void {
  const arch = GOARCH[process.arch] ?? process.arch;
  if (config.os !== undefined && config.os !== 'linux') throw invalid(`the image is for ${config.os}, not linux`);
  if (config.architecture !== undefined && config.architecture !== arch) {
    throw invalid(`the image is for ${config.architecture}, and emberd's VMs here run ${arch}: import the ${arch} variant (e.g. \`docker pull --platform linux/${arch}\`)`);
  }
}

/**
 * The manifest with OCI media types (a new blob if anything changed). umoci 0.4.7 (bookworm) reads
 * plain and gzip layers only: a zstd layer is decompressed here into a plain one (same diff_id).
 */
async function toOciManifest(layout: string, m: ImageManifest, desc: Descriptor): Promise<Descriptor> {
  if (!Array.isArray(m.layers) || m.config === undefined) throw invalid(`the manifest ${desc.digest} is not an image manifest`);
  let changed = m.mediaType !== undefined && m.mediaType !== MT.ociManifest;
  const layers: Descriptor[] = [];
  for (const [i, l] of m.layers.entries()) {
    const mt = l.mediaType ?? MT.ociLayer;
    if (mt === MT.ociLayerZstd) {
      layers.push(await unzstdLayer(layout, l));
      changed = true;
      continue;
    }
    const oci = LAYER_TYPES[mt];
    if (oci === undefined) {
      const why = mt === MT.dockerForeign ? 'a foreign layer (its bytes are not in the archive)' : `of media type ${mt}, which emberd cannot apply`;
      throw invalid(`layer ${i} of the image is ${why}`);
    }
    if (oci !== mt) changed = true;
    layers.push({ ...l, mediaType: oci });
  }
  if (m.config.mediaType !== MT.ociConfig) changed = true;
  if (!changed) return { mediaType: MT.ociManifest, digest: desc.digest, size: desc.size };
  return writeJsonBlob(layout, { schemaVersion: 2, mediaType: MT.ociManifest, config: { ...m.config, mediaType: MT.ociConfig }, layers }, MT.ociManifest);
}

/** A zstd layer as a plain tar blob. */
async function unzstdLayer(layout: string, l: Descriptor): Promise<Descriptor> {
  const tmp = join(layout, 'blobs', `unzstd-${l.digest.slice(7, 23)}`);
  try {
    await run('zstd', ['-q', '-d', '-f', blobPath(layout, l.digest), '-o', tmp]);
  } catch (e) {
    throw invalid(`the zstd layer ${l.digest} cannot be decompressed: ${(e as Error).message}`);
  }
  const digest = `sha256:${await sha256File(tmp)}`;
  await rename(tmp, blobPath(layout, digest));
  return { mediaType: MT.ociLayer, digest, size: (await stat(blobPath(layout, digest))).size };
}
