// The OCI image layout on disk (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):
// blobs by digest, index.json, oci-layout; and the media types emberd meets in archives (OCI's
// and Docker's, which `docker save` and older registries use for the same things).

import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CustomPackError } from './errors.ts';

export const MT = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeign: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/** The annotation naming an image in an index (its tag). */
export const REF_NAME = 'org.opencontainers.image.ref.name';
/** containerd's (and `docker save`'s) full image name, e.g. docker.io/library/alpine:3.20 */
export const IMAGE_NAME = 'io.containerd.image.name';

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture?: string; os?: string; variant?: string };
}

export interface Index {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}

/** The parts of an image config emberd uses. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  config?: { Env?: string[] | null };
  rootfs?: { type: string; diff_ids: string[] };
}

const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

/** Host path of a blob; refuses digests that are not sha256 (which also keeps the path inside). */
export function blobPath(layout: string, digest: string): string {
  const m = DIGEST_RE.exec(digest);
  if (m === null) throw new CustomPackError('PACK_IMPORT_INVALID', `unsupported blob digest ${JSON.stringify(digest)} (emberd reads sha256 digests)`);
  return join(layout, 'blobs', 'sha256', m[1] as string);
}

export async function readJsonBlob<T>(layout: string, d: Pick<Descriptor, 'digest'>, what: string): Promise<T> {
  let data: Buffer;
  try {
    data = await readFile(blobPath(layout, d.digest));
  } catch {
    throw new CustomPackError('PACK_IMPORT_INVALID', `the archive lacks the ${what} blob ${d.digest}`);
  }
  const h = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  if (h !== d.digest) throw new CustomPackError('PACK_IMPORT_INVALID', `the ${what} blob ${d.digest} has the digest ${h}: the archive is damaged`);
  try {
    return JSON.parse(data.toString('utf8')) as T;
  } catch {
    throw new CustomPackError('PACK_IMPORT_INVALID', `the ${what} blob ${d.digest} is not JSON`);
  }
}

/** Writes a JSON blob (if not there yet) and returns its descriptor. */
export async function writeJsonBlob(layout: string, value: unknown, mediaType: string): Promise<Descriptor> {
  const data = Buffer.from(JSON.stringify(value));
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const p = blobPath(layout, digest);
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  if ((await stat(p).catch(() => null)) === null) await writeFile(p, data);
  return { mediaType, digest, size: data.length };
}

/** index.json + oci-layout naming one manifest `ref`. */
export async function writeIndex(layout: string, manifest: Descriptor, ref: string): Promise<void> {
  const index: Index = { schemaVersion: 2, manifests: [{ ...manifest, mediaType: MT.ociManifest, annotations: { [REF_NAME]: ref } }] };
  await writeFile(join(layout, 'index.json'), JSON.stringify(index));
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}
