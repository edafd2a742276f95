import { randomBytes } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
export const SANDBOX_ID_PATTERN = /^sb_[a-z0-9]{20}$/;

/** `sb_` + 20 random base36 characters (~103 bits): unguessable, short enough for socket paths. */
export function newSandboxId(): string {
  const bytes = randomBytes(20);
  let s = 'sb_';
  for (const b of bytes) s += ALPHABET[b % 36]; // 256 % 36 bias is irrelevant for uniqueness
  return s;
}

export function isSandboxId(s: string): boolean {
  return SANDBOX_ID_PATTERN.test(s);
}
