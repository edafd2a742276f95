// N concurrent creates against one daemon: wall time of the burst, p50 and p99 of each create's
// latency, and the boot modes used. Two bursts in one run: the first meets the pool at its floor
// (--pool-size), the second comes after the pool grew with the first's demand (up to --pool-max)
// and refilled, so the figures show what a pool that follows demand buys. Every sandbox is
// deleted after its burst. Prints figures; asserts nothing about time.
// Usage: node bench/burst.ts [n=16] [pack=python] [extra daemon flags...]
import { startDaemon, http, eventually, type TestDaemon } from '../test/helpers/daemon.ts';
import { privateImagesDir } from '../test/helpers/private-images.ts';
import { median, percentile, fmt } from './stats.ts';

const n = Number(process.argv[2] ?? 16);
const pack = process.argv[3] ?? 'python';
const flags = process.argv.slice(4);

interface Burst { wallMs: number; ms: number[]; modes: Map<string, number>; failed: string[] }

async function burst(d: TestDaemon): Promise<Burst> {
  const modes = new Map<string, number>();
  const failed: string[] = [];
  const ids: string[] = [];
  const t0 = performance.now();
  const ms = await Promise.all(Array.from({ length: n }, async () => {
    const t = performance.now();
    const r = await http(d, 'POST', '/sandboxes', JSON.stringify({ language_pack: pack }), { 'content-type': 'application/json' });
    const took = performance.now() - t;
    if (r.status === 201) { ids.push(r.json.id); modes.set(r.json.boot_mode, (modes.get(r.json.boot_mode) ?? 0) + 1); }
    else failed.push(`${r.status} ${r.json?.error?.code ?? r.text.slice(0, 100)}`);
    return took;
  }));
  const wallMs = performance.now() - t0;
  await Promise.all(ids.map((id) => http(d, 'DELETE', `/sandboxes/${id}`)));
  return { wallMs, ms, modes, failed };
}

const pool = async (d: TestDaemon) => (await http(d, 'GET', '/')).json.pool?.[pack] as { size: number; ready: number; filling: number } | undefined;

const images = privateImagesDir();
let d: TestDaemon;
try {
  d = await startDaemon(['--images-dir', images.dir, '--max-sandboxes', String(Math.max(32, n)), ...flags]);
} catch (e) {
  images.cleanup(); // a daemon that did not start left nothing else of ours
  throw e;
}
try {
  await eventually(async () => (await http(d, 'GET', '/')).json.snapshots?.[pack]?.status === 'ready', 300_000, `${pack} golden snapshot`);
  await eventually(async () => { const p = await pool(d); return !p || p.ready >= p.size; }, 300_000, 'pool at its floor');
  const before = await pool(d);
  const first = await burst(d);
  const grown = await pool(d);
  // The pool's target now holds the first burst's demand: let it fill before the second.
  await eventually(async () => { const p = await pool(d); return !p || (p.ready >= p.size && p.filling === 0); }, 600_000, 'pool refilled to its grown target');
  const refilled = await pool(d);
  const second = await burst(d);
  console.log(`${n} concurrent creates of ${pack}, ${new Date().toISOString()}; daemon flags: ${flags.join(' ') || '(defaults)'}`);
  const show = (label: string, b: Burst, p?: { size: number; ready: number }) => console.log(
    `${label.padEnd(34)} wall ${fmt(b.wallMs).padStart(8)}  p50 ${fmt(median(b.ms)).padStart(8)}  p99 ${fmt(percentile(b.ms, 99)).padStart(8)}  `
    + `boot modes ${[...b.modes].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`
    + `${b.failed.length ? `  failed ${b.failed.length}: ${[...new Set(b.failed)].join('; ')}` : ''}  (pool before: ${p ? `${p.ready} ready of ${p.size}` : 'off'})`);
  show('burst 1 (pool at its floor)', first, before);
  show('burst 2 (pool grown by demand)', second, refilled);
  console.log(`pool target after burst 1: ${grown?.size ?? 'off'}; what it measures: POST /sandboxes wall time per request from ${n} at once, HTTP over loopback`);
} finally {
  await d.stop();
  images.cleanup();
}
