// The resolver against a fake upstream on 127.0.0.1: only allowed names go upstream, their
// addresses are allowed before the answer leaves, everything else is REFUSED.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { buildQuery, buildResponse, parseAnswer, parseQuery, RCODE_NOERROR, RCODE_REFUSED, RCODE_SERVFAIL, TYPE_A, TYPE_AAAA, CLASS_IN } from './dns-codec.ts';
import { MIN_ALLOW_S, parseUpstream, SandboxResolver } from './resolver.ts';

test('only allowed A queries reach the upstream; answers are allowed first; others REFUSED', async () => {
  const asked: string[] = [];
  const up = createSocket('udp4');
  up.on('message', (m, r) => {
    const q = parseQuery(m);
    asked.push(q.question.name);
    up.send(buildResponse(q, RCODE_NOERROR, [{ addr: '203.0.113.9', ttl: 5 }]), r.port, r.address);
  });
  await new Promise<void>((r) => up.bind(0, '127.0.0.1', r));
  const allowed: [string[], number][] = [];
  const res = await SandboxResolver.listen('127.0.0.1', ['pypi.org'], { host: '127.0.0.1', port: up.address().port }, async (a, ttl) => { allowed.push([a, ttl]); });
  try {
    const ask = async (name: string, type = TYPE_A) => parseAnswer((await res.answer(buildQuery(7, { name, type, cls: CLASS_IN })))!, 7);
    assert.deepEqual(await ask('PyPI.org'), { rcode: RCODE_NOERROR, a: [{ addr: '203.0.113.9', ttl: 5 }] });
    assert.deepEqual(allowed, [[['203.0.113.9'], MIN_ALLOW_S]], 'allowed for at least MIN_ALLOW_S');
    assert.equal((await ask('evil.example')).rcode, RCODE_REFUSED);
    assert.equal((await ask('sub.pypi.org')).rcode, RCODE_REFUSED, 'exact names only');
    assert.deepEqual(await ask('pypi.org', TYPE_AAAA), { rcode: RCODE_NOERROR, a: [] });
    assert.deepEqual(asked, ['pypi.org']);
    assert.deepEqual(res.counters, { answered: 2, refused: 2, failed: 0 });
    assert.equal(await res.answer(Buffer.from('garbage')), undefined, 'unparsable: dropped');
  } finally {
    res.close();
    up.close();
  }
});

test('no upstream: SERVFAIL, nothing allowed', async () => {
  const res = await SandboxResolver.listen('127.0.0.1', ['pypi.org'], undefined, async () => { throw new Error('must not be called'); });
  try {
    assert.equal(parseAnswer((await res.answer(buildQuery(1, { name: 'pypi.org', type: TYPE_A, cls: CLASS_IN })))!, 1).rcode, RCODE_SERVFAIL);
  } finally { res.close(); }
});

test('--egress-dns values', () => {
  assert.deepEqual(parseUpstream('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
  assert.deepEqual(parseUpstream('9.9.9.9'), { host: '9.9.9.9', port: 53 });
  assert.equal(parseUpstream('dns.example:53'), undefined);
  assert.equal(parseUpstream('1.2.3.4:70000'), undefined);
});
