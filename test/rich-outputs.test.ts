// Rich outputs of python sessions in a real microVM of the python-data pack (docs/api.md, "Rich
// outputs"): matplotlib figures shown or left open come back as PNG bundles of the figure's size,
// display() of pandas and of _repr_*_ objects as their MIME types, the last expression as the main
// result; a streamed cell gives a result event in its place. One daemon, one sandbox for every case.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, http, type TestDaemon } from './helpers/daemon.ts';

const PACK = 'python-data';
/** matplotlib's first import takes seconds under software emulation; nothing here waits on time. */
const TIMEOUT_MS = 300_000;

let d: TestDaemon;
let id: string;
let skip: string | false = false;

before(async () => {
  d = await startDaemon(['--snapshots', 'off', '--pool-size', '0']);
  const packs = (await http(d, 'GET', '/packs')).json.packs as { name: string }[];
  if (!packs.some((p) => p.name === PACK)) {
    skip = `the ${PACK} pack is not built (emberd images build)`;
    return;
  }
  id = (await d.client.createSandbox({ language_pack: PACK })).id;
});
after(async () => {
  if (id) await d.client.deleteSandbox(id).catch(() => {});
  assert.equal(await d.stop(), 0, d.log());
});

type Bundle = Record<string, unknown> & { is_main_result: boolean };
interface CellAnswer { stdout: string; stderr: string; exit_code: number; value: string | null; truncated: boolean; results: Bundle[] }

async function cell(code: string, session = 'main'): Promise<CellAnswer> {
  const r = await http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ session, code, timeout_ms: TIMEOUT_MS }), { 'content-type': 'application/json' });
  assert.equal(r.status, 200, r.text);
  return r.json as CellAnswer;
}

/** Width and height from a PNG's IHDR, after checking the signature. */
function pngSize(b64: unknown): [number, number] {
  const png = Buffer.from(String(b64), 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
  return [png.readUInt32BE(16), png.readUInt32BE(20)];
}

test('plt.show() sends the figure as a PNG of its size; the figure is closed after', async (t) => {
  if (skip) return t.skip(skip);
  const r = await cell('import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 3, 2])\nplt.show()\nprint(len(plt.get_fignums()))');
  assert.deepEqual([r.exit_code, r.stderr, r.stdout], [0, '', '0\n']);
  assert.equal(r.results.length, 1, JSON.stringify(r.results).slice(0, 300));
  const [fig] = r.results;
  assert.equal(fig!.is_main_result, false);
  assert.deepEqual(pngSize(fig!['image/png']), [200, 150]);
  assert.match(String(fig!['text/plain']), /^<Figure size 200x150 with 1 Axes>$/);
});

test('a figure left open at the end of a cell comes back without plt.show()', async (t) => {
  if (skip) return t.skip(skip);
  const r = await cell('fig, ax = plt.subplots(figsize=(2, 2), dpi=40)\nax.bar(["a", "b"], [1, 2])\nx = 1');
  assert.equal(r.exit_code, 0, r.stderr);
  assert.deepEqual(r.results.map((b) => pngSize(b['image/png'])), [[80, 80]]);
  assert.deepEqual((await cell('len(plt.get_fignums())')).value, '0', 'sent figures are closed');
});

test('display() of a DataFrame and of _repr_*_ objects, then the last expression as the main result', async (t) => {
  if (skip) return t.skip(skip);
  const r = await cell([
    'import pandas as pd',
    'class Svg:',
    '    def _repr_svg_(self): return "<svg xmlns=\\"http://www.w3.org/2000/svg\\"/>"',
    '    def _repr_json_(self): return {"k": [1, 2]}',
    'display(pd.DataFrame({"a": [1, 2]}))',
    'display(Svg())',
    '6 * 7',
  ].join('\n'));
  assert.equal(r.exit_code, 0, r.stderr);
  assert.equal(r.value, '42');
  assert.equal(r.results.length, 3);
  const [df, svg, main] = r.results;
  assert.match(String(df!['text/html']), /<table[\s\S]*<\/table>/);
  assert.match(String(df!['text/plain']), /a\n0\s+1\n1\s+2/);
  assert.equal(svg!['image/svg+xml'], '<svg xmlns="http://www.w3.org/2000/svg"/>');
  assert.deepEqual(svg!['application/json'], { k: [1, 2] });
  assert.deepEqual([df!.is_main_result, svg!.is_main_result], [false, false]);
  assert.deepEqual(main, { 'text/plain': '42', is_main_result: true });
});

test('a streamed cell emits a result event in its place among the output', async (t) => {
  if (skip) return t.skip(skip);
  const res = await fetch(`${d.url}/sandboxes/${id}/exec`, {
    method: 'POST',
    headers: { accept: 'application/x-ndjson', 'content-type': 'application/json' },
    body: JSON.stringify({ session: 'main', timeout_ms: TIMEOUT_MS, code: 'print("before", flush=True)\nplt.figure(figsize=(1, 1), dpi=30)\nplt.show()\nprint("after")' }),
  });
  assert.equal(res.status, 200);
  const events = (await res.text()).trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const kinds = events.map((e) => (e.type === 'stdout' ? `stdout:${String(e.data).trim()}` : String(e.type))).filter((k) => k !== 'stdout:');
  assert.deepEqual(kinds, ['stdout:before', 'result', 'stdout:after', 'exit']);
  assert.deepEqual(pngSize(events.find((e) => e.type === 'result')!['image/png']), [30, 30]);
  assert.equal(events.at(-1)!.exit_code, 0);
});

test('one-shot execs have no results (a chart is saved to a file there)', async (t) => {
  if (skip) return t.skip(skip);
  const r = await d.client.exec(id, { code: 'import matplotlib.pyplot as plt\nplt.plot([1])\nplt.show()\nprint("ok")', timeout_ms: TIMEOUT_MS });
  assert.deepEqual([r.exit_code, r.stdout], [0, 'ok\n']);
  assert.equal((r as unknown as { results?: unknown }).results, undefined);
});
