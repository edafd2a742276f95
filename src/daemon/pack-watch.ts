// New, rebuilt or removed packs reach a running daemon: on SIGHUP, and when the images dir's
// manifest changes (`emberd packs build|import` and `emberd images build` rewrite it last). The
// image set is read again; a read that fails keeps the packs the daemon had, and says why.
import { watch, type FSWatcher } from 'node:fs';
import { loadImageSet, MANIFEST_NAME, type ImageSet } from '../images/manifest.ts';
import type { Logger } from '../log.ts';

/** How long the manifest must stay unchanged before it is read (a build writes several files). */
const SETTLE_MS = 500;

export interface PackWatch { close(): void; reload(): void }

export function watchPacks(dir: string, apply: (images: ImageSet) => void, log: Logger): PackWatch {
  const reload = () => {
    let images: ImageSet;
    try {
      images = loadImageSet(dir);
    } catch (e) {
      log.error(`reading the packs again failed, keeping the ones loaded: ${(e as Error).message}`);
      return;
    }
    apply(images);
  };
  let timer: NodeJS.Timeout | undefined;
  const soon = () => { clearTimeout(timer); timer = setTimeout(reload, SETTLE_MS); };
  const onHup = () => { log.info('SIGHUP: reading the packs again'); reload(); };
  process.on('SIGHUP', onHup);
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, (_event, file) => { if (file === MANIFEST_NAME) soon(); });
    watcher.on('error', (e) => log.warn(`watching ${dir} for new packs stopped (${e.message}); send SIGHUP after building one`));
  } catch (e) {
    log.warn(`cannot watch ${dir} for new packs (${(e as Error).message}); send SIGHUP after building one`);
  }
  return {
    reload,
    close: () => {
      clearTimeout(timer);
      watcher?.close();
      process.off('SIGHUP', onHup);
    },
  };
}
