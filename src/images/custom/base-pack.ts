// The built-in pack a spec starts from, as built in the images dir: its squashfs (checked against
// the manifest, since its sha256 is part of the custom pack's key), its json and its packages.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packJsonRel, packSqfsRel, sha256File, type DebRecord, type Manifest, type PackMeta } from '../manifest.ts';
import { CustomPackError } from './errors.ts';

export interface BasePack {
  name: string;
  /** absolute path of packs/<name>.sqfs */
  image: string;
  sha256: string;
  meta: PackMeta;
  /** the Debian packages it was built from (manifest.inputs.packs) */
  debs: DebRecord[];
}

export async function loadBasePack(dir: string, manifest: Manifest, name: string): Promise<BasePack> {
  const fix = `run \`emberd images build --only ${name} --dir ${dir}\``;
  const notBuilt = (why: string): CustomPackError => new CustomPackError('PACK_BASE_NOT_BUILT', `base pack ${name} ${why} in ${dir}: ${fix}`);
  const rec = manifest.files[packSqfsRel(name)];
  if (manifest.steps[`pack:${name}`] === undefined || rec === undefined) throw notBuilt('is not built');
  const image = join(dir, packSqfsRel(name));
  let meta: PackMeta;
  try {
    meta = JSON.parse(await readFile(join(dir, packJsonRel(name)), 'utf8')) as PackMeta;
  } catch {
    throw notBuilt('has no readable json');
  }
  if (meta.custom === true) throw notBuilt('is a custom pack (a base is a built-in pack)');
  const sha256 = await sha256File(image).catch(() => '');
  if (sha256 !== rec.sha256 || meta.sha256 !== rec.sha256) throw notBuilt('does not match its manifest record (damaged or half-written)');
  return { name, image, sha256, meta, debs: manifest.inputs.packs[name]?.packages ?? [] };
}
