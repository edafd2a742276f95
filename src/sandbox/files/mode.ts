// File modes as the files API takes them (an octal string or a number) and hands them to chmod.
import { EmberdError } from '../../errors.ts';

/** Permission bits as 4 octal digits ("0644"); undefined stays undefined (keep / default). */
export function parseMode(mode: string | number | undefined): string | undefined {
  if (mode === undefined) return undefined;
  const n = typeof mode === 'number' ? mode : /^[0-7]{1,5}$/.test(mode) ? parseInt(mode, 8) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 0o7777) throw new EmberdError('INVALID_REQUEST', `mode "${mode}" is not a file mode; give octal permission bits such as 0644 or 0755`);
  return n.toString(8).padStart(4, '0');
}
