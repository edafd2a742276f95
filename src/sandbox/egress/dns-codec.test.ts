import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQuery, parseAnswer, parseQuery, readName, TYPE_A, CLASS_IN } from './dns-codec.ts';

test('a query round-trips', () => {
  const q = parseQuery(buildQuery(0x1234, { name: 'pypi.org', type: TYPE_A, cls: CLASS_IN }));
  assert.deepEqual({ id: q.id, question: q.question }, { id: 0x1234, question: { name: 'pypi.org', type: TYPE_A, cls: CLASS_IN } });
});

test('an answer with a CNAME chain and compression yields its A records', () => {
  // header: id 9, QR|RD|RA, 1 question, 2 answers; question pypi.org A IN;
  // answer 1: pypi.org CNAME -> x.pypi.org (compressed); answer 2: x.pypi.org A 203.0.113.5
  const name = Buffer.from([4, ...Buffer.from('pypi'), 3, ...Buffer.from('org'), 0]);
  const buf = Buffer.concat([
    Buffer.from([0, 9, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]), name, Buffer.from([0, 1, 0, 1]),
    Buffer.from([0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, 0x78, 0xc0, 12]),
    Buffer.from([0xc0, 38, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 203, 0, 113, 5]),
  ]);
  assert.equal(readName(buf, 38).name, 'x.pypi.org');
  assert.deepEqual(parseAnswer(buf, 9), { rcode: 0, a: [{ addr: '203.0.113.5', ttl: 256 }] });
  assert.throws(() => parseAnswer(buf, 10), /not the answer/);
});

test('malformed input throws, compression loops included', () => {
  assert.throws(() => parseQuery(Buffer.alloc(5)));
  const loop = Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
  assert.throws(() => parseQuery(loop), /compression/);
  assert.throws(() => parseQuery(Buffer.concat([Buffer.from([0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 1, 0, 1])])), /not a query/);
});
