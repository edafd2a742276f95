// The little of DNS (RFC 1035) the egress resolver needs: a query's id, question and flags, the
// A records of an answer, and the answers it writes itself (REFUSED, an empty NOERROR). No
// dependency: `dns-packet` would do, but is not in package.json, and this is ~100 lines that
// only read what they must and refuse anything else.

export const TYPE_A = 1;
export const TYPE_CNAME = 5;
export const TYPE_AAAA = 28;
export const CLASS_IN = 1;
export const RCODE_NOERROR = 0;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_REFUSED = 5;

export interface Question { name: string; type: number; cls: number }
export interface Query { id: number; flags: number; question: Question; /** bytes of the header + question */ end: number }

/** Reads a (possibly compressed) name at `off`; returns it lower-cased without the final dot, and where the record goes on. */
export function readName(buf: Buffer, off: number): { name: string; next: number } {
  const labels: string[] = [];
  let next = -1;
  let jumps = 0;
  for (;;) {
    if (off >= buf.length) throw new Error('name past the end');
    const len = buf[off]!;
    if (len === 0) { off += 1; break; }
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length || ++jumps > 16) throw new Error('bad compression pointer');
      if (next < 0) next = off + 2;
      off = ((len & 0x3f) << 8) | buf[off + 1]!;
      continue;
    }
    if (len > 63 || off + 1 + len > buf.length) throw new Error('bad label');
    labels.push(buf.toString('latin1', off + 1, off + 1 + len).toLowerCase());
    off += 1 + len;
  }
  const name = labels.join('.');
  if (name.length > 253) throw new Error('name too long');
  return { name, next: next < 0 ? off : next };
}

/** A standard query with exactly one question; throws on anything else. */
export function parseQuery(buf: Buffer): Query {
  if (buf.length < 12) throw new Error('short header');
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000) throw new Error('not a query');
  if (((flags >> 11) & 0xf) !== 0) throw new Error('not a standard query');
  if (buf.readUInt16BE(4) !== 1) throw new Error('not exactly one question');
  const { name, next } = readName(buf, 12);
  if (next + 4 > buf.length) throw new Error('short question');
  return { id: buf.readUInt16BE(0), flags, question: { name, type: buf.readUInt16BE(next), cls: buf.readUInt16BE(next + 2) }, end: next + 4 };
}

function encodeName(name: string): Buffer {
  const parts = name ? name.split('.') : [];
  return Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'latin1')])), Buffer.from([0])]);
}

export function buildQuery(id: number, q: Question): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(0x0100, 2); // RD
  h.writeUInt16BE(1, 4);
  const t = Buffer.alloc(4);
  t.writeUInt16BE(q.type, 0);
  t.writeUInt16BE(q.cls, 2);
  return Buffer.concat([h, encodeName(q.name), t]);
}

/** An answer to `q` with `rcode` and these A records (name = the question's). */
export function buildResponse(q: Query, rcode: number, a: { addr: string; ttl: number }[] = []): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(q.id, 0);
  h.writeUInt16BE(0x8000 | (q.flags & 0x0100) | 0x0080 | rcode, 2); // QR, RD copied, RA
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(a.length, 6);
  const question = Buffer.concat([encodeName(q.question.name), Buffer.from([q.question.type >> 8, q.question.type & 255, q.question.cls >> 8, q.question.cls & 255])]);
  const records = a.map((r) => {
    const b = Buffer.alloc(16);
    b.writeUInt16BE(0xc00c, 0); // the question's name
    b.writeUInt16BE(TYPE_A, 2);
    b.writeUInt16BE(CLASS_IN, 4);
    b.writeUInt32BE(r.ttl >>> 0, 6);
    b.writeUInt16BE(4, 10);
    r.addr.split('.').forEach((o, i) => b.writeUInt8(Number(o), 12 + i));
    return b;
  });
  return Buffer.concat([h, question, ...records]);
}

/** The rcode and the A records (any owner name: CNAME chains end in them) of an answer to query `id`. */
export function parseAnswer(buf: Buffer, id: number): { rcode: number; a: { addr: string; ttl: number }[] } {
  if (buf.length < 12 || buf.readUInt16BE(0) !== id || !(buf.readUInt16BE(2) & 0x8000)) throw new Error('not the answer to our query');
  const rcode = buf.readUInt16BE(2) & 0xf;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = readName(buf, off).next + 4;
  const a: { addr: string; ttl: number }[] = [];
  for (let i = 0; i < an; i++) {
    off = readName(buf, off).next;
    if (off + 10 > buf.length) throw new Error('short record');
    const type = buf.readUInt16BE(off);
    const cls = buf.readUInt16BE(off + 2);
    const ttl = buf.readUInt32BE(off + 4);
    const len = buf.readUInt16BE(off + 8);
    off += 10;
    if (off + len > buf.length) throw new Error('short record data');
    if (type === TYPE_A && cls === CLASS_IN && len === 4) a.push({ addr: [...buf.subarray(off, off + 4)].join('.'), ttl });
    off += len;
  }
  return { rcode, a };
}
