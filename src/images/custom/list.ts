// `emberd packs list`: every pack the manifest records, built-in and custom, with what its json
// says; a pack whose files are missing or do not match their record is listed with the reason.

import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ImagesError, packJsonRel, packSqfsRel, readManifest, type PackMeta } from '../manifest.ts';

export interface PackListing {
  name: string;
  custom: boolean;
  size: number;
  sha256: string;
  interpreter: string[];
  description?: string;
  env?: Record<string, string>;
  /** why the pack cannot be used */
  error?: string;
}

export async function listPacks(dir: string): Promise<PackListing[]> {
  const m = await readManifest(dir);
  if (m === null) throw new ImagesError('IMAGES_NOT_BUILT', `no images in ${dir}: run \`emberd images build\``);
  const out: PackListing[] = [];
  for (const rel of Object.keys(m.files).sort()) {
    const name = /^packs\/([^/]+)\.json$/.exec(rel)?.[1];
    if (name === undefined) continue;
    const rec = m.files[packSqfsRel(name)];
    let meta: Partial<PackMeta> = {};
    let error: string | undefined;
    try {
      meta = JSON.parse(await readFile(join(dir, packJsonRel(name)), 'utf8')) as PackMeta;
      const size = (await stat(join(dir, packSqfsRel(name)))).size;
      if (rec === undefined || size !== rec.size || meta.sha256 !== rec.sha256) error = `packs/${name}.sqfs does not match its record: rebuild it`;
    } catch (e) {
      error = `unreadable: ${(e as Error).message}`;
    }
    out.push({
      name,
      custom: meta.custom === true,
      size: meta.size ?? 0,
      sha256: meta.sha256 ?? '',
      interpreter: Array.isArray(meta.interpreter) ? meta.interpreter : [],
      ...(meta.description !== undefined && { description: meta.description }),
      ...(meta.env !== undefined && { env: meta.env }),
      ...(error !== undefined && { error }),
    });
  }
  return out;
}
