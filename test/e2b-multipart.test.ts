// The streaming multipart reader of envd's POST /files against bodies made by Node's own FormData
// encoder (what the E2B SDK sends), cut into chunks at every size, so a boundary split across
// chunks is met at every offset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { text } from 'node:stream/consumers';
import { boundaryOf, readMultipart } from '../src/e2b/multipart.ts';
import { isEmberdError } from '../src/errors.ts';

async function encode(form: FormData): Promise<{ body: Buffer; boundary: string }> {
  const res = new Response(form);
  const boundary = boundaryOf(res.headers.get('content-type')!);
  assert.ok(boundary);
  return { body: Buffer.from(await res.arrayBuffer()), boundary };
}

async function* chunks(b: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function parts(body: Buffer, boundary: string, size: number) {
  const got: { name: string; filename: string | undefined; data: string }[] = [];
  await readMultipart(chunks(body, size), boundary, async (p) => { got.push({ name: p.name, filename: p.filename, data: await text(p.body) }); });
  return got;
}

test('parts come out whole and in order whatever the chunking', async () => {
  const form = new FormData();
  form.append('file', new Blob(['first\r\n--not a boundary\r\n']), '/tmp/a b.txt');
  form.append('file', new Blob(['']), 'empty');
  form.append('other', 'field value');
  form.append('file', new Blob([Buffer.alloc(5000, 0x2d)]), '/tmp/dashes');
  const { body, boundary } = await encode(form);
  const want = [
    { name: 'file', filename: '/tmp/a b.txt', data: 'first\r\n--not a boundary\r\n' },
    { name: 'file', filename: 'empty', data: '' },
    { name: 'other', filename: undefined, data: 'field value' },
    { name: 'file', filename: '/tmp/dashes', data: '-'.repeat(5000) },
  ];
  for (const size of [1, 2, 3, 7, 13, 64, 1000, body.length]) assert.deepEqual(await parts(body, boundary, size), want, `chunks of ${size}`);
});

test('a truncated body or one without the boundary is refused with INVALID_REQUEST', async () => {
  const form = new FormData();
  form.append('file', new Blob(['data']), 'x');
  const { body, boundary } = await encode(form);
  for (const cut of [10, body.length - 10]) {
    await assert.rejects(parts(body.subarray(0, cut), boundary, 5), (e) => isEmberdError(e, 'INVALID_REQUEST'));
  }
  await assert.rejects(parts(Buffer.from('no parts here'), boundary, 4), (e) => isEmberdError(e, 'INVALID_REQUEST'));
});

test('a consumer that fails ends the read with its error', async () => {
  const form = new FormData();
  form.append('file', new Blob([Buffer.alloc(1 << 20)]), 'big');
  const { body, boundary } = await encode(form);
  const boom = new Error('disk full');
  await assert.rejects(readMultipart(chunks(body, 4096), boundary, async (p) => { p.body.once('data', () => p.body.destroy()); throw boom; }), boom);
});
