// A private images directory for tests that build or damage snapshots: symlinks to the built
// images, with its own (initially empty) snapshots/ folder.
import { mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { testImages } from './images.ts';

export function privateImagesDir(): { dir: string; cleanup: () => void } {
  const src = testImages().dir;
  const dir = mkdtempSync('/tmp/emb-img-');
  for (const name of readdirSync(src)) {
    if (name !== 'snapshots' && name !== 'downloads') symlinkSync(join(src, name), join(dir, name));
  }
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
