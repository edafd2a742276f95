import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, parseCidr, parsePolicy } from './policy.ts';
import { isEmberdError } from '../../errors.ts';

test('CIDRs: host bits, prefixes and octets are checked', () => {
  assert.deepEqual(parseCidr('198.51.100.0/24'), { addr: 0xc6336400, prefix: 24 });
  assert.equal(formatCidr(parseCidr('198.51.100.7')!), '198.51.100.7');
  for (const bad of ['198.51.100.1/24', '198.51.100.0/33', '256.1.1.1', '1.2.3', '01.2.3.4', '1.2.3.4/']) assert.equal(parseCidr(bad), undefined, bad);
});

test('entries inside a special range or a host address are explicit exceptions; 0.0.0.0/0 does not open them', () => {
  const host = parseCidr('192.0.2.2')!.addr;
  const p = parsePolicy(['0.0.0.0/0', '10.1.2.0/24', '169.254.169.254', '192.0.2.2', 'PyPI.org.', 'pypi.org'], [host], 10);
  assert.deepEqual(p.cidrs.map(formatCidr), ['0.0.0.0/0']);
  assert.deepEqual(p.explicit.map(formatCidr), ['10.1.2.0/24', '169.254.169.254', '192.0.2.2']);
  assert.deepEqual(p.names, ['pypi.org'], 'lower-cased, trailing dot dropped, once');
  assert.equal(p.rateMbit, 10);
  // a range that merely contains a special range is not an exception to it
  assert.deepEqual(parsePolicy(['10.0.0.0/7']).explicit, []);
});

test('bad entries are INVALID_REQUEST naming the entry', () => {
  for (const bad of ['198.51.100.1/24', '2001:db8::1', 'bad name', '-x.example', 'a..b']) {
    assert.throws(() => parsePolicy([bad]), (e) => isEmberdError(e, 'INVALID_REQUEST') && e.message.includes(bad), bad);
  }
});
