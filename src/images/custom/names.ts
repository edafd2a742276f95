// Pack names: which are built in (the builder's own targets, so packs added there count at once)
// and what a custom pack may be called.

import { TARGETS } from '../build.ts';
import { CustomPackError } from './errors.ts';

/** Targets of `emberd images build` that are not language packs. */
const NON_PACK_TARGETS: ReadonlySet<string> = new Set(['kernel', 'initramfs']);

/** The packs `emberd images build` makes (shell, python, ...): the possible bases, and reserved names. */
export function builtInPackNames(): string[] {
  return TARGETS.filter((t) => !NON_PACK_TARGETS.has(t));
}

export const PACK_NAME_RE = /^[a-z0-9-]{1,32}$/;

/** Throws PACK_NAME_INVALID (with how to fix it) unless `name` may be a custom pack's name. */
export function checkCustomPackName(name: string, where = 'name'): void {
  if (!PACK_NAME_RE.test(name)) {
    throw new CustomPackError(
      'PACK_NAME_INVALID',
      `${where} ${JSON.stringify(name)} is not a valid pack name: use 1 to 32 characters of a-z, 0-9 and "-" (e.g. "my-tools")`,
    );
  }
  const builtIn = builtInPackNames();
  if (builtIn.includes(name)) {
    throw new CustomPackError(
      'PACK_NAME_INVALID',
      `${where} "${name}" is a built-in pack (${builtIn.join(', ')}): pick another name, e.g. "${name}-custom"`,
    );
  }
}
