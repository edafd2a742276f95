// Loads the golden frames in protocol/vectors/ (shared with guest/tests/codec_test.c).
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const VECTORS_DIR = fileURLToPath(new URL('../../protocol/vectors/', import.meta.url));

export interface Vector { name: string; bytes: Buffer; expected: string }

export function parseHex(text: string): Buffer {
  const hex = text.split('\n').filter((l) => !l.trimStart().startsWith('#')).join('').replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error('vector hex is malformed');
  return Buffer.from(hex, 'hex');
}

export function loadVectors(dir = VECTORS_DIR): Vector[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.hex'))
    .sort()
    .map((f) => {
      const name = f.slice(0, -4);
      return {
        name,
        bytes: parseHex(readFileSync(dir + f, 'utf8')),
        expected: readFileSync(`${dir}${name}.txt`, 'utf8').trimEnd(),
      };
    });
}
