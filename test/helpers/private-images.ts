// A private images directory for tests that build or damage snapshots: symlinks to the built
// images, with its own (initially empty) snapshots/ folder. With `packs`, only those packs are in
// it (its manifest says so), so a daemon on it builds goldens for those alone.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testImages } from './images.ts';

export function privateImagesDir(opts: { packs?: readonly string[] } = {}): { dir: string; cleanup: () => void } {
  const src = testImages().dir;
  const dir = mkdtempSync('/tmp/emb-img-');
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  if (!opts.packs) {
    for (const name of readdirSync(src)) {
      if (name !== 'snapshots' && name !== 'downloads') symlinkSync(join(src, name), join(dir, name));
    }
    return { dir, cleanup };
  }
  const keep = new Set(opts.packs.flatMap((p) => [`packs/${p}.json`, `packs/${p}.sqfs`]));
  const manifest = JSON.parse(readFileSync(join(src, 'manifest.json'), 'utf8')) as { files: Record<string, unknown> };
  manifest.files = Object.fromEntries(Object.entries(manifest.files).filter(([rel]) => !rel.startsWith('packs/') || keep.has(rel)));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  for (const name of readdirSync(src)) {
    if (!['snapshots', 'downloads', 'packs', 'manifest.json'].includes(name)) symlinkSync(join(src, name), join(dir, name));
  }
  mkdirSync(join(dir, 'packs'));
  for (const rel of keep) symlinkSync(join(src, rel), join(dir, rel));
  return { dir, cleanup };
}
