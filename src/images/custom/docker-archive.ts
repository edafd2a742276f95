// A `docker save` tarball in Docker's own format (manifest.json naming a config file and layer
// tars; every Docker before 25 writes only that) turned into an OCI image layout in place, so that
// umoci can unpack it. Docker 25 and later also write index.json: those are read as OCI directly.
// (skopeo would do this conversion too, but it drags iptables and the CNI plugins onto the host.)

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import { CustomPackError } from './errors.ts';
import { IMAGE_NAME, MT, REF_NAME, blobPath, writeJsonBlob, type Descriptor, type Index } from './oci-layout.ts';

interface DockerSaveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

async function sha256Of(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** gzip, zstd or a plain tar, by the first bytes (Docker's manifest.json does not say). */
async function layerMediaType(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, 0);
    if (b[0] === 0x1f && b[1] === 0x8b) return MT.ociLayerGzip;
    if (b.readUInt32LE(0) === 0xfd2fb528) return MT.ociLayerZstd;
    return MT.ociLayer;
  } finally {
    await fh.close();
  }
}

/** A file named by manifest.json, kept inside the extracted archive. */
function member(root: string, rel: unknown, what: string): string {
  if (typeof rel !== 'string' || rel === '' || normalize(rel).startsWith('..') || rel.startsWith('/')) {
    throw new CustomPackError('PACK_IMPORT_INVALID', `manifest.json names a ${what} ${JSON.stringify(rel)} outside the archive`);
  }
  return join(root, rel);
}

/** Adds blobs/, oci-layout and index.json (one manifest per image, named by its tags) to `root`. */
export async function dockerArchiveToOci(root: string): Promise<void> {
  let entries: DockerSaveEntry[];
  try {
    entries = JSON.parse(await readFile(join(root, 'manifest.json'), 'utf8')) as DockerSaveEntry[];
    if (!Array.isArray(entries) || entries.length === 0) throw new Error('no images');
  } catch (e) {
    throw new CustomPackError('PACK_IMPORT_INVALID', `manifest.json of the docker archive is unusable: ${(e as Error).message}`);
  }
  await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
  const blobs = new Map<string, Descriptor>();
  const addBlob = async (path: string, mediaType: () => Promise<string>): Promise<Descriptor> => {
    const known = blobs.get(path);
    if (known !== undefined) return known;
    const st = await stat(path).catch(() => null);
    if (st === null || !st.isFile()) throw new CustomPackError('PACK_IMPORT_INVALID', `the docker archive lacks ${path.slice(root.length + 1)}`);
    const d: Descriptor = { mediaType: await mediaType(), digest: await sha256Of(path), size: st.size };
    await link(path, blobPath(root, d.digest)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    blobs.set(path, d);
    return d;
  };

  const index: Index = { schemaVersion: 2, manifests: [] };
  for (const e of entries) {
    const config = await addBlob(member(root, e.Config, 'config'), async () => MT.ociConfig);
    if (!Array.isArray(e.Layers)) throw new CustomPackError('PACK_IMPORT_INVALID', 'manifest.json has an image without Layers');
    const layers: Descriptor[] = [];
    for (const l of e.Layers) {
      const p = member(root, l, 'layer');
      layers.push(await addBlob(p, () => layerMediaType(p)));
    }
    const manifest = await writeJsonBlob(root, { schemaVersion: 2, mediaType: MT.ociManifest, config, layers }, MT.ociManifest);
    const tags = e.RepoTags ?? [];
    if (tags.length === 0) index.manifests.push(manifest);
    for (const t of tags) {
      const tag = /:([^:/]+)$/.exec(t)?.[1] ?? 'latest';
      index.manifests.push({ ...manifest, annotations: { [IMAGE_NAME]: t, [REF_NAME]: tag } });
    }
  }
  await writeFile(join(root, 'index.json'), JSON.stringify(index));
  await writeFile(join(root, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}
