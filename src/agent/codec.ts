// Frame and TLV codec for the host<->guest protocol (docs/protocol.md is the source of truth;
// protocol/vectors/ pins the bytes, shared with the C side).

export const MAGIC0 = 0x45; // 'E'
export const MAGIC1 = 0x4d; // 'M'
export const HEADER_SIZE = 12;
export const MAX_PAYLOAD = 1 << 20;
export const INITIAL_WINDOW = 256 * 1024;
export const PROTOCOL_VERSION = 1;
export const MAX_PING = 4096;

export const MsgType = {
  HELLO: 0x01,
  HELLO_ACK: 0x02,
  PING: 0x03,
  PONG: 0x04,
  EXEC: 0x10,
  STDOUT: 0x11,
  STDERR: 0x12,
  STDIN: 0x13,
  EXIT: 0x14,
  SIGNAL: 0x15,
  WINDOW: 0x16,
  RESIZE: 0x17,
  CONNECT: 0x18,
  CONNECTED: 0x19,
  CLOSE: 0x1a,
  SHUTDOWN: 0x20,
  ERROR: 0x7f,
} as const;
export type MsgTypeName = keyof typeof MsgType;

type Kind = 'u8' | 'u32' | 'u64' | 'bytes';
interface FieldSpec { tag: number; name: string; kind: Kind; repeated?: boolean; required?: boolean }

/** Per-type TLV schema; a type absent from this table has a raw payload. */
const SCHEMA: Partial<Record<MsgTypeName, FieldSpec[]>> = {
  HELLO: [
    { tag: 1, name: 'proto_version', kind: 'u32', required: true },
    { tag: 2, name: 'realtime_ns', kind: 'u64' },
    { tag: 3, name: 'entropy', kind: 'bytes' },
    { tag: 4, name: 'hostname', kind: 'bytes' },
    { tag: 5, name: 'disk_bytes', kind: 'u64' },
    { tag: 6, name: 'pids_max', kind: 'u32' },
  ],
  HELLO_ACK: [
    { tag: 1, name: 'proto_version', kind: 'u32', required: true },
    { tag: 2, name: 'agent_version', kind: 'bytes', required: true },
    { tag: 3, name: 'capability', kind: 'bytes', repeated: true },
    { tag: 4, name: 'transport', kind: 'bytes' },
    { tag: 5, name: 'uptime_ms', kind: 'u64' },
    { tag: 6, name: 'disk_bytes', kind: 'u64' },
    { tag: 7, name: 'pids_max', kind: 'u32' },
    { tag: 8, name: 'memory_max', kind: 'u64' },
    { tag: 9, name: 'limits_error', kind: 'bytes' },
    { tag: 10, name: 'limits_message', kind: 'bytes' },
  ],
  EXEC: [
    { tag: 1, name: 'argv', kind: 'bytes', repeated: true },
    { tag: 2, name: 'code', kind: 'bytes' },
    { tag: 3, name: 'env', kind: 'bytes', repeated: true },
    { tag: 4, name: 'cwd', kind: 'bytes' },
    { tag: 5, name: 'stdin', kind: 'bytes' },
    { tag: 6, name: 'stdin_open', kind: 'u8' },
    { tag: 7, name: 'timeout_ms', kind: 'u64' },
    { tag: 8, name: 'output_cap', kind: 'u64' },
    { tag: 9, name: 'fresh_process', kind: 'u8' },
    { tag: 10, name: 'tty', kind: 'u8' },
    { tag: 11, name: 'rows', kind: 'u32' },
    { tag: 12, name: 'cols', kind: 'u32' },
  ],
  EXIT: [
    { tag: 1, name: 'exit_code', kind: 'u32', required: true },
    { tag: 2, name: 'signal', kind: 'u32' },
    { tag: 3, name: 'timed_out', kind: 'u8' },
    { tag: 4, name: 'truncated', kind: 'u8' },
    { tag: 5, name: 'duration_us', kind: 'u64' },
    { tag: 6, name: 'fast_path', kind: 'u8' },
  ],
  SIGNAL: [{ tag: 1, name: 'signo', kind: 'u32', required: true }],
  WINDOW: [{ tag: 1, name: 'increment', kind: 'u32', required: true }],
  RESIZE: [
    { tag: 1, name: 'rows', kind: 'u32', required: true },
    { tag: 2, name: 'cols', kind: 'u32', required: true },
  ],
  CONNECT: [{ tag: 1, name: 'port', kind: 'u32', required: true }],
  CONNECTED: [],
  CLOSE: [
    { tag: 1, name: 'code', kind: 'bytes' },
    { tag: 2, name: 'message', kind: 'bytes' },
  ],
  SHUTDOWN: [],
  ERROR: [
    { tag: 1, name: 'code', kind: 'bytes', required: true },
    { tag: 2, name: 'message', kind: 'bytes', required: true },
  ],
};

const TYPE_NAMES = new Map<number, MsgTypeName>(
  (Object.entries(MsgType) as [MsgTypeName, number][]).map(([n, v]) => [v, n]),
);

export function typeName(type: number): MsgTypeName | undefined {
  return TYPE_NAMES.get(type);
}

export interface Frame { type: number; flags: number; channel: number; payload: Buffer }

/** One decoded TLV field; numbers are bigint for u64, number otherwise. */
export interface Field { tag: number; name: string; value: number | bigint | Buffer }

export class ProtocolError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

export function encodeFrame(type: number, channel: number, payload: Buffer = Buffer.alloc(0), flags = 0): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new ProtocolError('FRAME_TOO_LARGE', `payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  const header = Buffer.alloc(HEADER_SIZE);
  header[0] = MAGIC0;
  header[1] = MAGIC1;
  header[2] = type;
  header[3] = flags;
  header.writeUInt32BE(channel >>> 0, 4);
  header.writeUInt32BE(payload.length, 8);
  return Buffer.concat([header, payload]);
}

/** Values accepted by encodeMessage: arrays for repeated fields, strings are UTF-8 encoded. */
export type FieldValue = number | bigint | boolean | string | Buffer | readonly (string | Buffer)[];

export function encodeTlv(typeNameKey: MsgTypeName, values: Record<string, FieldValue | undefined>): Buffer {
  const spec = SCHEMA[typeNameKey];
  if (!spec) throw new Error(`${typeNameKey} has a raw payload`);
  const parts: Buffer[] = [];
  for (const f of spec) {
    const v = values[f.name];
    if (v === undefined) continue;
    const list = f.repeated ? (v as readonly (string | Buffer)[]) : [v];
    for (const item of list) parts.push(encodeField(f, item as FieldValue));
  }
  for (const key of Object.keys(values)) {
    if (!spec.some((f) => f.name === key)) throw new Error(`${typeNameKey} has no field ${key}`);
  }
  return Buffer.concat(parts);
}

function encodeField(f: FieldSpec, v: FieldValue): Buffer {
  let value: Buffer;
  switch (f.kind) {
    case 'u8': value = Buffer.from([Number(v) & 0xff]); break;
    case 'u32': value = Buffer.alloc(4); value.writeUInt32BE(Number(v) >>> 0); break;
    case 'u64': value = Buffer.alloc(8); value.writeBigUInt64BE(BigInt(v as number | bigint)); break;
    case 'bytes': value = Buffer.isBuffer(v) ? v : Buffer.from(String(v), 'utf8'); break;
  }
  const head = Buffer.alloc(5);
  head[0] = f.tag;
  head.writeUInt32BE(value.length, 1);
  return Buffer.concat([head, value]);
}

export function encodeMessage(type: MsgTypeName, channel: number, values: Record<string, FieldValue | undefined> = {}): Buffer {
  return encodeFrame(MsgType[type], channel, encodeTlv(type, values));
}

/** Decodes a TLV payload against the schema of `type`; throws ProtocolError('BAD_PAYLOAD'). */
export function decodeTlv(type: number, payload: Buffer): Field[] {
  const name = typeName(type);
  const spec = name ? SCHEMA[name] : undefined;
  if (!spec) throw new Error(`type 0x${type.toString(16)} has no TLV payload`);
  const fields: Field[] = [];
  let off = 0;
  while (off < payload.length) {
    if (payload.length - off < 5) throw new ProtocolError('BAD_PAYLOAD', `truncated field header at offset ${off}`);
    const tag = payload[off]!;
    const len = payload.readUInt32BE(off + 1);
    off += 5;
    if (len > payload.length - off) throw new ProtocolError('BAD_PAYLOAD', `field ${tag} runs past the payload`);
    const raw = payload.subarray(off, off + len);
    off += len;
    const f = spec.find((s) => s.tag === tag);
    if (!f) { fields.push({ tag, name: `tag${tag}`, value: raw }); continue; }
    const want = f.kind === 'u8' ? 1 : f.kind === 'u32' ? 4 : f.kind === 'u64' ? 8 : -1;
    if (want >= 0 && len !== want) throw new ProtocolError('BAD_PAYLOAD', `field ${f.name} has length ${len}, expected ${want}`);
    const value = f.kind === 'u8' ? raw[0]! : f.kind === 'u32' ? raw.readUInt32BE(0) : f.kind === 'u64' ? raw.readBigUInt64BE(0) : raw;
    fields.push({ tag, name: f.name, value });
  }
  for (const f of spec) {
    if (f.required && !fields.some((x) => x.tag === f.tag)) throw new ProtocolError('BAD_PAYLOAD', `${name} lacks required field ${f.name}`);
  }
  return fields;
}

export function hasTlv(type: number): boolean {
  const name = typeName(type);
  return name !== undefined && SCHEMA[name] !== undefined;
}

/** Fields as a plain object: repeated fields become arrays, bytes stay Buffers. */
export function fieldsToObject(type: number, fields: Field[]): Record<string, number | bigint | Buffer | Buffer[]> {
  const name = typeName(type);
  const spec = (name && SCHEMA[name]) || [];
  const out: Record<string, number | bigint | Buffer | Buffer[]> = {};
  for (const f of fields) {
    const s = spec.find((x) => x.tag === f.tag);
    if (s?.repeated) ((out[f.name] ??= []) as Buffer[]).push(f.value as Buffer);
    else out[f.name] = f.value;
  }
  return out;
}

export function quoteBytes(b: Buffer): string {
  let s = '"';
  for (const c of b) {
    if (c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c) s += String.fromCharCode(c);
    else s += '\\x' + c.toString(16).padStart(2, '0');
  }
  return s + '"';
}

/** Canonical dump (docs/protocol.md, "Test vectors"); the C side prints the same text. */
export function dumpFrame(frame: Frame): string {
  const name = typeName(frame.type) ?? `0x${frame.type.toString(16)}`;
  const lines = [`${name} channel=${frame.channel} flags=${frame.flags}`];
  if (hasTlv(frame.type)) {
    for (const f of decodeTlv(frame.type, frame.payload)) {
      lines.push(`${f.name}=${Buffer.isBuffer(f.value) ? quoteBytes(f.value) : String(f.value)}`);
    }
  } else {
    lines.push(`data ${quoteBytes(frame.payload)}`);
  }
  return lines.join('\n');
}

/**
 * Incremental frame decoder: push() stream bytes, get whole frames back. Malformed input never
 * throws out of push(); it is reported through onError and the decoder resynchronises on the next
 * magic, exactly as the guest does. Chunks that cannot complete what is pending are only queued and
 * joined once enough have arrived, so a frame trickled in tiny chunks is copied once, not once per
 * chunk, and the decoder never holds more than one maximum frame.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private queued: Buffer[] = [];
  private queuedBytes = 0;
  /** How many bytes the decoder must hold before it can make progress. */
  private need = 0;
  private inGarbage = false;
  private readonly onError: (code: string, message: string) => void;
  constructor(onError: (code: string, message: string) => void = () => {}) {
    this.onError = onError;
  }

  /** Bytes held for a frame still arriving: less than HEADER_SIZE + MAX_PAYLOAD. */
  get buffered(): number {
    return this.buf.length + this.queuedBytes;
  }

  push(chunk: Buffer): Frame[] {
    if (this.buffered + chunk.length < this.need) {
      this.queued.push(chunk);
      this.queuedBytes += chunk.length;
      return [];
    }
    this.buf = this.buf.length === 0 && this.queued.length === 0 ? chunk : Buffer.concat([this.buf, ...this.queued, chunk]);
    this.queued = [];
    this.queuedBytes = 0;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buf.length < 2) { this.need = 2; break; }
      if (this.buf[0] !== MAGIC0 || this.buf[1] !== MAGIC1) {
        if (!this.inGarbage) this.onError('BAD_MAGIC', 'bytes without the frame magic; skipping to the next frame');
        this.inGarbage = true;
        this.skipToMagic(1);
        continue;
      }
      if (this.buf.length < HEADER_SIZE) { this.need = HEADER_SIZE; break; }
      const len = this.buf.readUInt32BE(8);
      if (len > MAX_PAYLOAD) {
        this.onError('FRAME_TOO_LARGE', `frame length ${len} exceeds ${MAX_PAYLOAD}`);
        this.inGarbage = true;
        this.skipToMagic(2);
        continue;
      }
      if (this.buf.length < HEADER_SIZE + len) { this.need = HEADER_SIZE + len; break; }
      this.inGarbage = false;
      frames.push({
        type: this.buf[2]!,
        flags: this.buf[3]!,
        channel: this.buf.readUInt32BE(4),
        payload: Buffer.from(this.buf.subarray(HEADER_SIZE, HEADER_SIZE + len)),
      });
      this.buf = this.buf.subarray(HEADER_SIZE + len);
    }
    return frames;
  }

  /** Drops bytes up to the next magic at or after `from`; a trailing 'E' may start one, so it stays. */
  private skipToMagic(from: number): void {
    for (let i = from; i + 1 < this.buf.length; i++) {
      if (this.buf[i] === MAGIC0 && this.buf[i + 1] === MAGIC1) { this.buf = this.buf.subarray(i); return; }
    }
    const last = this.buf.length - 1;
    this.buf = last >= from && this.buf[last] === MAGIC0 ? this.buf.subarray(last) : Buffer.alloc(0);
  }
}
