import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMode } from './mode.ts';
import { isEmberdError } from '../../errors.ts';

test('parseMode: octal strings and numbers become 4 octal digits; anything else is INVALID_REQUEST', () => {
  assert.equal(parseMode(undefined), undefined);
  for (const [input, want] of [['0644', '0644'], ['755', '0755'], ['4755', '4755'], ['0', '0000'], [0o600, '0600'], [0o7777, '7777']] as const) {
    assert.equal(parseMode(input), want, String(input));
  }
  for (const bad of ['999', '0x1ff', '', '07777777', 0o10000, -1, 1.5, 'rwx']) {
    assert.throws(() => parseMode(bad), (e: unknown) => isEmberdError(e, 'INVALID_REQUEST'), String(bad));
  }
});
