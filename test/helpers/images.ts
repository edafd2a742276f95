// The images the VM tests boot: built by `emberd images build` (scripts/setup.sh runs it).
import { loadImageSet, type ImageSet } from '../../src/images/manifest.ts';

export function testImages(): ImageSet {
  try {
    return loadImageSet(process.env.EMBERD_IMAGES_DIR);
  } catch (e) {
    throw new Error(`VM tests need built images: run scripts/setup.sh (or \`bin/emberd images build\`) first. ${(e as Error).message}`);
  }
}
