// A streaming multipart/form-data reader for envd's POST /files: each part is handed over as a
// Readable while the request is still arriving, and the next part is read only once the consumer
// has finished with it, so an upload of any size holds no more than a chunk or two in memory.
import { PassThrough, type Readable } from 'node:stream';
import { EmberdError } from '../errors.ts';

export interface Part {
  /** The form field name (envd's is "file"). */
  name: string;
  /** The part's filename (the E2B SDK puts the sandbox path there). */
  filename: string | undefined;
  body: Readable;
}

/** The boundary of a multipart/form-data Content-Type, or undefined. */
export function boundaryOf(contentType: string): string | undefined {
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

function parseHeaders(block: string): { name: string; filename: string | undefined } {
  const disposition = block.split('\r\n').find((l) => /^content-disposition:/i.test(l)) ?? '';
  const param = (key: string) => {
    const m = new RegExp(`;\\s*${key}="((?:[^"\\\\]|\\\\.)*)"`, 'i').exec(disposition) ?? new RegExp(`;\\s*${key}=([^;\\s]+)`, 'i').exec(disposition);
    return m ? m[1]!.replace(/\\(.)/g, '$1') : undefined;
  };
  return { name: param('name') ?? '', filename: param('filename') };
}

const bad = (why: string) => new EmberdError('INVALID_REQUEST', `the multipart body is malformed (${why}); send a multipart/form-data body with "file" parts`);

/**
 * Calls `onPart` for each part in order and waits for it (it must consume part.body) before
 * reading on. Rejects on a malformed body, or with what onPart rejected with.
 */
export async function readMultipart(source: AsyncIterable<Buffer>, boundary: string, onPart: (p: Part) => Promise<void>): Promise<void> {
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  const it = source[Symbol.asyncIterator]();
  // The first delimiter has no CRLF before it: pretend it had.
  let buf: Buffer = Buffer.from('\r\n');
  let done = false;
  const more = async (): Promise<boolean> => {
    if (done) return false;
    const r = await it.next();
    if (r.done) { done = true; return false; }
    buf = buf.length ? Buffer.concat([buf, r.value]) : r.value;
    return true;
  };
  const need = async (n: number) => { while (buf.length < n) if (!(await more())) throw bad('it ends early'); };

  // The preamble, up to the first delimiter.
  for (;;) {
    const at = buf.indexOf(delimiter);
    if (at >= 0) { buf = buf.subarray(at + delimiter.length); break; }
    buf = buf.subarray(Math.max(0, buf.length - delimiter.length + 1));
    if (!(await more())) throw bad('no boundary');
  }
  for (;;) {
    await need(2);
    if (buf[0] === 0x2d && buf[1] === 0x2d) return; // "--": the end
    if (buf[0] !== 0x0d || buf[1] !== 0x0a) throw bad('no line break after a boundary');
    buf = buf.subarray(2);
    let end: number;
    while ((end = buf.indexOf('\r\n\r\n')) < 0) {
      if (buf.length > 16 << 10) throw bad('part headers are too long');
      if (!(await more())) throw bad('it ends in part headers');
    }
    const { name, filename } = parseHeaders(buf.subarray(0, end).toString('utf8'));
    buf = buf.subarray(end + 4);
    const body = new PassThrough();
    const consumed = onPart({ name, filename, body });
    consumed.catch(() => {});
    // Under the consumer's backpressure; its failure ends the read with its error.
    const write = async (chunk: Buffer) => {
      if (!body.write(chunk)) await Promise.race([new Promise((r) => body.once('drain', r)), consumed]);
    };
    // Copy the body until the next delimiter, keeping back what could be its start.
    for (;;) {
      const at = buf.indexOf(delimiter);
      if (at >= 0) {
        if (at) await write(buf.subarray(0, at));
        buf = buf.subarray(at + delimiter.length);
        break;
      }
      const keep = delimiter.length - 1;
      if (buf.length > keep) {
        const out = buf.subarray(0, buf.length - keep);
        buf = buf.subarray(buf.length - keep);
        await write(out);
      }
      if (!(await more())) { body.destroy(bad('it ends inside a part')); await consumed.catch(() => {}); throw bad('it ends inside a part'); }
    }
    body.end();
    await consumed;
  }
}
