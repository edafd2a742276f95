import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameDecoder, ProtocolError, MsgType, decodeTlv, dumpFrame, encodeFrame, encodeMessage, hasTlv, MAX_PAYLOAD,
} from './codec.ts';
import { loadVectors } from './vectors.ts';

const vectors = loadVectors();

test('the shared vector folder is not empty', () => {
  assert.ok(vectors.length >= 20, `only ${vectors.length} vectors`);
  assert.ok(vectors.some((v) => v.expected.startsWith('error ')));
});

for (const v of vectors) {
  test(`vector ${v.name}`, () => {
    const errors: string[] = [];
    const frames = new FrameDecoder((code) => errors.push(code)).push(v.bytes);
    if (v.expected.startsWith('error ')) {
      const code = v.expected.slice('error '.length);
      // Framing errors come from the decoder; payload errors from decoding the frame's TLV.
      if (frames.length === 1) {
        const f = frames[0]!;
        if (!hasTlv(f.type)) errors.push('UNKNOWN_TYPE');
        else {
          try { decodeTlv(f.type, f.payload); } catch (e) { errors.push((e as ProtocolError).code); }
        }
      }
      assert.deepEqual(errors, [code]);
      return;
    }
    assert.deepEqual(errors, []);
    assert.equal(frames.length, 1);
    const f = frames[0]!;
    assert.equal(dumpFrame(f), v.expected);
    assert.deepEqual(encodeFrame(f.type, f.channel, f.payload, f.flags), v.bytes, 're-encoding gives the same bytes');
  });
}

test('decoder reassembles frames split at every byte boundary', () => {
  const stream = Buffer.concat(vectors.filter((v) => !v.expected.startsWith('error')).map((v) => v.bytes));
  const want = new FrameDecoder().push(stream).map(dumpFrame);
  const dec = new FrameDecoder();
  const got = [];
  for (let i = 0; i < stream.length; i++) got.push(...dec.push(stream.subarray(i, i + 1)));
  assert.deepEqual(got.map(dumpFrame), want);
});

test('decoder resynchronises after garbage and reports it once', () => {
  const errors: string[] = [];
  const dec = new FrameDecoder((c) => errors.push(c));
  const ping = encodeFrame(MsgType.PING, 0, Buffer.from('x'));
  const frames = dec.push(Buffer.concat([Buffer.from('garbage garbage garbage'), ping, Buffer.from('\x00\x01'), ping]));
  assert.equal(frames.length, 2);
  assert.deepEqual(errors, ['BAD_MAGIC', 'BAD_MAGIC']);
});

test('a magic split across chunks inside garbage is not lost', () => {
  const dec = new FrameDecoder();
  const ping = encodeFrame(MsgType.PING, 0, Buffer.from('y'));
  assert.equal(dec.push(Buffer.concat([Buffer.from('zz'), ping.subarray(0, 1)])).length, 0);
  assert.equal(dec.push(ping.subarray(1)).length, 1);
});

test('encoder refuses oversized payloads and unknown fields', () => {
  assert.throws(() => encodeFrame(MsgType.STDIN, 1, Buffer.alloc(MAX_PAYLOAD + 1)), /exceeds/);
  assert.throws(() => encodeMessage('SIGNAL', 1, { signo: 9, bogus: 1 }), /no field bogus/);
});
