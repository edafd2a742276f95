// Applies an image's layers in order onto a fresh root with umoci (Debian's `umoci`): it verifies
// every blob against its digest and each layer against the config's diff_ids, honours whiteouts
// (.wh.NAME deletes NAME, .wh..wh..opq empties a directory of the lower layers' entries), keeps
// every path inside the root, and needs no daemon and no registry.

import { CommandError, run } from '../util.ts';
import { CustomPackError } from './errors.ts';

/** Throws PACK_TOOL_MISSING unless umoci runs. */
export async function checkUmoci(): Promise<string> {
  try {
    const { stdout } = await run('umoci', ['--version']);
    return stdout.toString('utf8').trim();
  } catch {
    throw new CustomPackError('PACK_TOOL_MISSING', 'umoci is not installed: `apt-get install umoci` (Debian bookworm main; scripts/setup.sh installs it)');
  }
}

/** `umoci raw unpack` of `layout:ref` into `rootfs` (which must not exist yet). */
export async function unpackImage(layout: string, ref: string, rootfs: string): Promise<void> {
  // As a user, --rootless: files come out owned by us (the squashfs is -all-root anyway), and
  // device nodes, which only root can make, are skipped.
  const rootless = process.getuid?.() !== 0 ? ['--rootless'] : [];
  try {
    await run('umoci', ['--log', 'error', 'raw', 'unpack', ...rootless, '--image', `${layout}:${ref}`, rootfs]);
  } catch (e) {
    const why = e instanceof CommandError ? e.stderr.trim().split('\n').slice(-3).join('\n') : (e as Error).message;
    throw new CustomPackError('PACK_IMPORT_INVALID', `umoci could not apply the image's layers: ${why}`, { cause: e });
  }
}
