// Property tests (fast-check) of the host wire codec: every message type round-trips, the TLV
// decoder is lossless or refuses with BAD_PAYLOAD, and the frame decoder, fed arbitrary bytes in
// arbitrary chunks, never throws, holds at most one maximum frame, and gives the same frames and
// errors however the stream is split. The message table below is written from docs/protocol.md,
// not read from codec.ts, so the two are checked against each other. A failure prints the seed and
// the shrunk counterexample; every bug found this way also gets a vector or a named test.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import * as fc from 'fast-check';
import {
  FrameDecoder, HEADER_SIZE, MAGIC0, MAGIC1, MAX_PAYLOAD, MsgType, ProtocolError, decodeTlv, dumpFrame, encodeFrame,
  encodeMessage, fieldsToObject, hasTlv, type Frame, type MsgTypeName,
} from './codec.ts';

/** EMBERD_FC_SCALE=N multiplies every run count (a long hunt: EMBERD_FC_SCALE=100). */
const SCALE = Number(process.env.EMBERD_FC_SCALE ?? 1);
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });

type Kind = 'u8' | 'u32' | 'u64' | 'bytes';
interface Spec { tag: number; name: string; kind: Kind; repeated?: boolean; required?: boolean }

/** docs/protocol.md, "Messages": TLV types with their fields; null for a raw payload. */
const DOC: Record<MsgTypeName, Spec[] | null> = {
  HELLO: [
    { tag: 1, name: 'proto_version', kind: 'u32', required: true }, { tag: 2, name: 'realtime_ns', kind: 'u64' },
    { tag: 3, name: 'entropy', kind: 'bytes' }, { tag: 4, name: 'hostname', kind: 'bytes' },
    { tag: 5, name: 'disk_bytes', kind: 'u64' }, { tag: 6, name: 'pids_max', kind: 'u32' },
  ],
  HELLO_ACK: [
    { tag: 1, name: 'proto_version', kind: 'u32', required: true }, { tag: 2, name: 'agent_version', kind: 'bytes', required: true },
    { tag: 3, name: 'capability', kind: 'bytes', repeated: true }, { tag: 4, name: 'transport', kind: 'bytes' },
    { tag: 5, name: 'uptime_ms', kind: 'u64' }, { tag: 6, name: 'disk_bytes', kind: 'u64' }, { tag: 7, name: 'pids_max', kind: 'u32' },
    { tag: 8, name: 'memory_max', kind: 'u64' }, { tag: 9, name: 'limits_error', kind: 'bytes' }, { tag: 10, name: 'limits_message', kind: 'bytes' },
  ],
  PING: null,
  PONG: null,
  EXEC: [
    { tag: 1, name: 'argv', kind: 'bytes', repeated: true }, { tag: 2, name: 'code', kind: 'bytes' },
    { tag: 3, name: 'env', kind: 'bytes', repeated: true }, { tag: 4, name: 'cwd', kind: 'bytes' },
    { tag: 5, name: 'stdin', kind: 'bytes' }, { tag: 6, name: 'stdin_open', kind: 'u8' },
    { tag: 7, name: 'timeout_ms', kind: 'u64' }, { tag: 8, name: 'output_cap', kind: 'u64' },
    { tag: 9, name: 'fresh_process', kind: 'u8' }, { tag: 10, name: 'tty', kind: 'u8' },
    { tag: 11, name: 'rows', kind: 'u32' }, { tag: 12, name: 'cols', kind: 'u32' },
  ],
  STDOUT: null,
  STDERR: null,
  STDIN: null,
  EXIT: [
    { tag: 1, name: 'exit_code', kind: 'u32', required: true }, { tag: 2, name: 'signal', kind: 'u32' },
    { tag: 3, name: 'timed_out', kind: 'u8' }, { tag: 4, name: 'truncated', kind: 'u8' },
    { tag: 5, name: 'duration_us', kind: 'u64' }, { tag: 6, name: 'fast_path', kind: 'u8' },
  ],
  SIGNAL: [{ tag: 1, name: 'signo', kind: 'u32', required: true }],
  WINDOW: [{ tag: 1, name: 'increment', kind: 'u32', required: true }],
  RESIZE: [{ tag: 1, name: 'rows', kind: 'u32', required: true }, { tag: 2, name: 'cols', kind: 'u32', required: true }],
  CONNECT: [{ tag: 1, name: 'port', kind: 'u32', required: true }],
  CONNECTED: [],
  CLOSE: [{ tag: 1, name: 'code', kind: 'bytes' }, { tag: 2, name: 'message', kind: 'bytes' }],
  SHUTDOWN: [],
  ERROR: [{ tag: 1, name: 'code', kind: 'bytes', required: true }, { tag: 2, name: 'message', kind: 'bytes', required: true }],
};
const NAMES = Object.keys(DOC) as MsgTypeName[];
const TLV_NAMES = NAMES.filter((n) => DOC[n] !== null);
const RAW_NAMES = NAMES.filter((n) => DOC[n] === null);
const KIND_LEN: Record<Kind, number> = { u8: 1, u32: 4, u64: 8, bytes: -1 };

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const bytes = (maxLength = 64) => fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));
const valueOf = (kind: Kind): fc.Arbitrary<number | bigint | Buffer> =>
  kind === 'u8' ? fc.integer({ min: 0, max: 0xff }) : kind === 'u32' ? u32 : kind === 'u64' ? fc.bigInt(0n, (1n << 64n) - 1n) : bytes();

/** Field values of one message as encodeMessage takes them and fieldsToObject gives them back. */
function messageValues(name: MsgTypeName): fc.Arbitrary<Record<string, number | bigint | Buffer | Buffer[]>> {
  const model: Record<string, fc.Arbitrary<number | bigint | Buffer | Buffer[]>> = {};
  const requiredKeys: string[] = [];
  for (const f of DOC[name]!) {
    model[f.name] = f.repeated ? fc.array(bytes(), { minLength: 1, maxLength: 4 }) : valueOf(f.kind);
    if (f.required) requiredKeys.push(f.name);
  }
  return fc.record(model, { requiredKeys, noNullPrototype: true });
}

function tlvField(tag: number, value: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = tag;
  head.writeUInt32BE(value.length, 1);
  return Buffer.concat([head, value]);
}

/** One frame of any type, valid for its type (what a well-behaved peer sends). */
const validFrame: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(fc.constantFrom(...TLV_NAMES), u32).chain(([name, channel]) => messageValues(name).map((v) => encodeMessage(name, channel, v))),
  fc.tuple(fc.constantFrom(...RAW_NAMES), u32, bytes(300), fc.integer({ min: 0, max: 0xff }))
    .map(([name, channel, payload, flags]) => encodeFrame(MsgType[name], channel, payload, flags)),
);

/** Splits `b` at arbitrary points (sometimes one byte at a time). */
function chunked(b: Buffer): fc.Arbitrary<Buffer[]> {
  const single = fc.constant([...Array(b.length).keys()].map((i) => b.subarray(i, i + 1)));
  const cuts = fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, b.length - 1) }), { maxLength: 24 }).map((points) => {
    const sorted = points.filter((p) => p < b.length).sort((x, y) => x - y);
    return [0, ...sorted].map((p, i) => b.subarray(p, sorted[i] ?? b.length));
  });
  return b.length < 200 ? fc.oneof(cuts, single) : cuts;
}

function header(type: number, length: number, channel = 0): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h[0] = MAGIC0;
  h[1] = MAGIC1;
  h[2] = type;
  h.writeUInt32BE(channel, 4);
  h.writeUInt32BE(length, 8);
  return h;
}

/** Streams a hostile peer might send: valid frames mixed with garbage, stray and split magics,
 * oversized and truncated headers, and random bytes. */
const hostileStream: fc.Arbitrary<Buffer> = fc.array(fc.oneof(
  { weight: 4, arbitrary: validFrame },
  { weight: 2, arbitrary: bytes(40) },
  { weight: 2, arbitrary: fc.constantFrom(Buffer.from('E'), Buffer.from('EM'), Buffer.from('EE'), Buffer.from('MEM')) },
  { weight: 2, arbitrary: fc.tuple(fc.integer({ min: 0, max: 0xff }), fc.integer({ min: MAX_PAYLOAD + 1, max: 0xffffffff })).map(([t, n]) => header(t, n)) },
  { weight: 1, arbitrary: fc.tuple(validFrame, fc.nat()).map(([f, cut]) => f.subarray(0, cut % f.length)) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: 0xff }), fc.integer({ min: 0, max: 64 }), bytes(64)).map(([t, n, p]) => Buffer.concat([header(t, n), p])) },
), { maxLength: 12 }).map((parts) => Buffer.concat(parts));

interface Decoded { frames: Frame[]; errors: string[] }

function decodeChunks(chunks: Buffer[]): Decoded {
  const errors: string[] = [];
  const dec = new FrameDecoder((code, message) => {
    assert.ok(message.length > 0, 'decoder errors carry a message');
    errors.push(code);
  });
  const frames: Frame[] = [];
  for (const c of chunks) {
    frames.push(...dec.push(c));
    // One maximum frame plus what is still arriving, never more (a hostile length cannot make the
    // host hold gigabytes).
    assert.ok(dec.buffered <= HEADER_SIZE + MAX_PAYLOAD, `decoder holds ${dec.buffered} bytes`);
  }
  return { frames, errors };
}

test('every message type of docs/protocol.md is in the tables this file generates from', () => {
  assert.deepEqual(new Set(NAMES), new Set(Object.keys(MsgType)));
  for (const n of NAMES) assert.equal(hasTlv(MsgType[n]), DOC[n] !== null, `${n}: TLV or raw`);
});

for (const name of TLV_NAMES) {
  test(`${name}: encode -> decode -> fields round-trips, and re-encodes to the same bytes`, () => {
    fc.assert(fc.property(messageValues(name), u32, (values, channel) => {
      const wire = encodeMessage(name, channel, values);
      const { frames, errors } = decodeChunks([wire]);
      assert.deepEqual(errors, []);
      assert.equal(frames.length, 1);
      const f = frames[0]!;
      assert.equal(f.type, MsgType[name]);
      assert.equal(f.channel, channel);
      assert.equal(f.flags, 0);
      assert.deepEqual(fieldsToObject(f.type, decodeTlv(f.type, f.payload)), values);
      assert.deepEqual(encodeFrame(f.type, f.channel, f.payload, f.flags), wire);
      assert.equal(typeof dumpFrame(f), 'string');
    }), runs(150));
  });
}

test('raw types (PING, PONG, STDOUT, STDERR, STDIN) round-trip any bytes, channel and flags', () => {
  fc.assert(fc.property(fc.constantFrom(...RAW_NAMES), u32, bytes(4096), fc.integer({ min: 0, max: 0xff }), (name, channel, payload, flags) => {
    const wire = encodeFrame(MsgType[name], channel, payload, flags);
    const { frames, errors } = decodeChunks([wire]);
    assert.deepEqual(errors, []);
    assert.deepEqual(frames, [{ type: MsgType[name], flags, channel, payload }]);
  }), runs(300));
});

test('unknown tags are skipped in order: known fields and tag<N> entries come back as sent', () => {
  const payloadOf = (name: MsgTypeName) => {
    const spec = DOC[name]!;
    const known = new Set(spec.map((f) => f.tag));
    const unknownTag = fc.integer({ min: 0, max: 0xff }).filter((t) => !known.has(t));
    const field = fc.oneof(
      ...spec.map((f) => valueOf(f.kind).map((v) => ({ tag: f.tag, name: f.name, value: v }))),
      fc.tuple(unknownTag, bytes()).map(([tag, value]) => ({ tag, name: `tag${tag}`, value: value as number | bigint | Buffer })),
    );
    const required = spec.filter((f) => f.required).map((f) => valueOf(f.kind).map((v) => ({ tag: f.tag, name: f.name, value: v })));
    return fc.tuple(fc.tuple(...required), fc.array(field, { maxLength: 10 })).chain(([req, rest]) => fc.shuffledSubarray([...req, ...rest], { minLength: req.length + rest.length }));
  };
  fc.assert(fc.property(fc.constantFrom(...TLV_NAMES).chain((n) => payloadOf(n).map((fields) => ({ n, fields }))), ({ n, fields }) => {
    const spec = DOC[n]!;
    const payload = Buffer.concat(fields.map((f) => {
      const kind = spec.find((s) => s.tag === f.tag)?.kind ?? 'bytes';
      const v = f.value;
      if (kind === 'bytes') return tlvField(f.tag, v as Buffer);
      const b = Buffer.alloc(KIND_LEN[kind]);
      if (kind === 'u8') b[0] = v as number; else if (kind === 'u32') b.writeUInt32BE(v as number); else b.writeBigUInt64BE(v as bigint);
      return tlvField(f.tag, b);
    }));
    assert.deepEqual(decodeTlv(MsgType[n], payload), fields);
  }), runs(300));
});

test('decodeTlv on arbitrary payloads: lossless when it accepts, BAD_PAYLOAD when it refuses, nothing else', () => {
  // Payloads made of plausible TLV fields (right and wrong lengths, overruns) and raw noise.
  const tlvish = fc.array(fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: 12 }), bytes(12)).map(([tag, v]) => tlvField(tag, v)),
    fc.tuple(fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 0xffffffff }), bytes(8)).map(([tag, len, v]) => {
      const f = tlvField(tag, v);
      f.writeUInt32BE(len, 1);
      return f;
    }),
    bytes(6),
  ), { maxLength: 8 }).map((parts) => Buffer.concat(parts));
  fc.assert(fc.property(fc.constantFrom(...TLV_NAMES), fc.oneof(tlvish, bytes(80)), (name, payload) => {
    let fields;
    try {
      fields = decodeTlv(MsgType[name], payload);
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `not a ProtocolError: ${String(e)}`);
      assert.equal(e.code, 'BAD_PAYLOAD');
      assert.ok(e.message.length > 0);
      return;
    }
    const spec = DOC[name]!;
    for (const r of spec.filter((s) => s.required)) assert.ok(fields.some((f) => f.tag === r.tag), `required ${r.name} present`);
    const again = Buffer.concat(fields.map((f) => {
      const kind = spec.find((s) => s.tag === f.tag)?.kind ?? 'bytes';
      assert.equal(f.name, spec.find((s) => s.tag === f.tag)?.name ?? `tag${f.tag}`);
      if (kind === 'bytes') return tlvField(f.tag, f.value as Buffer);
      const b = Buffer.alloc(KIND_LEN[kind]);
      if (kind === 'u8') b[0] = f.value as number; else if (kind === 'u32') b.writeUInt32BE(f.value as number); else b.writeBigUInt64BE(f.value as bigint);
      return tlvField(f.tag, b);
    }));
    assert.deepEqual(again, payload, 'the accepted fields are exactly the payload');
    assert.equal(typeof dumpFrame({ type: MsgType[name], flags: 0, channel: 0, payload }), 'string');
  }), runs(1000));
});

test('a valid stream decodes to the frames sent, however it is split', () => {
  fc.assert(fc.property(fc.array(validFrame, { minLength: 1, maxLength: 8 }).chain((frames) => {
    const stream = Buffer.concat(frames);
    return chunked(stream).map((chunks) => ({ frames, chunks }));
  }), ({ frames, chunks }) => {
    const got = decodeChunks(chunks);
    assert.deepEqual(got.errors, []);
    assert.deepEqual(got.frames.map((f) => encodeFrame(f.type, f.channel, f.payload, f.flags)), frames);
  }), runs(300));
});

test('a hostile stream: push() never throws, errors are BAD_MAGIC or FRAME_TOO_LARGE, and the split does not matter', () => {
  fc.assert(fc.property(hostileStream.chain((s) => chunked(s).map((chunks) => ({ s, chunks }))), ({ s, chunks }) => {
    const whole = decodeChunks([s]);
    const split = decodeChunks(chunks);
    for (const e of whole.errors) assert.ok(e === 'BAD_MAGIC' || e === 'FRAME_TOO_LARGE', e);
    assert.deepEqual(split.frames, whole.frames, 'same frames');
    assert.deepEqual(split.errors, whole.errors, 'same errors');
    for (const f of whole.frames) {
      if (!hasTlv(f.type)) continue;
      try { decodeTlv(f.type, f.payload); } catch (e) { assert.ok(e instanceof ProtocolError && e.code === 'BAD_PAYLOAD', String(e)); }
    }
  }), runs(500));
});

test('random bytes in random chunks: push() never throws', () => {
  fc.assert(fc.property(bytes(2000).chain((s) => chunked(s)), (chunks) => { decodeChunks(chunks); }), runs(300));
});

test('a length over MAX_PAYLOAD fails at the header, before any payload is buffered', () => {
  fc.assert(fc.property(fc.integer({ min: MAX_PAYLOAD + 1, max: 0xffffffff }), fc.integer({ min: 0, max: 0xff }), (len, type) => {
    const errors: string[] = [];
    const dec = new FrameDecoder((c) => errors.push(c));
    const h = header(type, len);
    assert.deepEqual(dec.push(h.subarray(0, HEADER_SIZE - 1)), []);
    assert.deepEqual(errors, []);
    dec.push(h.subarray(HEADER_SIZE - 1));
    assert.deepEqual(errors, ['FRAME_TOO_LARGE']);
    // At most the header's own tail, where a magic ("EM" among the channel or length bytes, or a
    // last "E") may start the next frame; never any of the claimed payload.
    assert.ok(dec.buffered < HEADER_SIZE, `holds ${dec.buffered} bytes`);
  }), runs(200));
});

test('a length up to MAX_PAYLOAD buffers at most that one frame, whatever follows', () => {
  // The payload is the maximum; bytes past the frame are fed in the same chunks.
  const frame = encodeFrame(MsgType.STDOUT, 1, Buffer.alloc(MAX_PAYLOAD, 0x78));
  fc.assert(fc.property(fc.integer({ min: 1, max: 1 << 18 }), bytes(64), (step, tail) => {
    const stream = Buffer.concat([frame, tail]);
    const chunks: Buffer[] = [];
    for (let i = 0; i < stream.length; i += step) chunks.push(stream.subarray(i, i + step));
    const { frames } = decodeChunks(chunks);
    assert.equal(frames[0]?.payload.length, MAX_PAYLOAD);
  }), runs(20));
});

// ---- regressions found by the properties above ----

test('too_large_drops_split_magic: after FRAME_TOO_LARGE, an "E" ending the chunk still starts the next frame', () => {
  // A FRAME_TOO_LARGE header whose chunk ends with the first byte of the next frame's magic: the
  // guest keeps that byte (find_magic in guest/src/codec.c); the host dropped it and lost the frame.
  const ping = encodeFrame(MsgType.PING, 0, Buffer.from('hi'));
  const stream = Buffer.concat([header(MsgType.PING, MAX_PAYLOAD + 1), ping]);
  const whole = decodeChunks([stream]);
  assert.deepEqual(whole.errors, ['FRAME_TOO_LARGE']);
  assert.equal(whole.frames.length, 1);
  const split = decodeChunks([stream.subarray(0, HEADER_SIZE + 1), stream.subarray(HEADER_SIZE + 1)]);
  assert.deepEqual(split.errors, ['FRAME_TOO_LARGE']);
  assert.deepEqual(split.frames, whole.frames);
});

test('decoder_quadratic_copy: a large frame trickled in small chunks is copied a bounded number of times, not once per chunk', () => {
  // A hostile guest sending a maximum frame a few bytes per write made the host re-copy everything
  // buffered on every chunk (O(n^2): a 1 MiB frame in 256-byte chunks cost ~0.3 s of event loop).
  const frame = encodeFrame(MsgType.STDOUT, 1, Buffer.alloc(16 * 1024, 0x78));
  let copied = 0;
  const concat = Buffer.concat.bind(Buffer);
  const spy = mock.method(Buffer, 'concat', (list: readonly Uint8Array[], total?: number) => {
    const out = concat(list, total);
    copied += out.length;
    return out;
  });
  try {
    const dec = new FrameDecoder();
    let frames = 0;
    for (let i = 0; i < frame.length; i++) frames += dec.push(frame.subarray(i, i + 1)).length;
    assert.equal(frames, 1);
  } finally {
    spy.mock.restore();
  }
  assert.ok(copied <= 4 * frame.length, `copied ${copied} bytes to decode a ${frame.length}-byte frame`);
});
