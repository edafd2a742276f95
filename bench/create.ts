// Create latency by path, in one run: cold boot, restore from the golden snapshot, warm-pool hit;
// with ratios to cold boot, the snapshot sizes and the host memory (RSS) of each kind of VM.
// Usage: node bench/create.ts [n=10] [pack=python]
import { readFileSync } from 'node:fs';
import { startDaemon, http, eventually, type TestDaemon } from '../test/helpers/daemon.ts';
import { privateImagesDir } from '../test/helpers/private-images.ts';
import { median, percentile, fmt } from './stats.ts';

const n = Number(process.argv[2] ?? 10);
const pack = process.argv[3] ?? 'python';
const images = privateImagesDir();

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function measure(d: TestDaemon, label: string, between: () => Promise<void>) {
  const ms: number[] = [];
  const rss: number[] = [];
  const modes = new Set<string>();
  for (let i = 0; i < n; i++) {
    await between();
    const t = performance.now();
    const sb = await d.client.createSandbox({ language_pack: pack });
    ms.push(performance.now() - t);
    modes.add(sb.boot_mode ?? '?');
    const r = await d.client.exec(sb.id, { code: pack === 'python' ? 'print(6*7)' : 'echo 42' });
    if (r.stdout !== '42\n') throw new Error(`bad output ${r.stdout}`);
    rss.push(rssMiB((await d.client.getSandbox(sb.id)).vmm_pid!));
    await d.client.deleteSandbox(sb.id);
  }
  return { label, ms, rss, modes: [...modes].join(',') };
}

const results = [];
try {
  let d = await startDaemon(['--images-dir', images.dir, '--snapshots', 'off', '--pool-size', '0']);
  results.push(await measure(d, 'cold boot', async () => {}));
  await d.stop();

  d = await startDaemon(['--images-dir', images.dir, '--pool-size', '0']);
  await eventually(async () => (await http(d, 'GET', '/')).json.snapshots[pack].status === 'ready', 120_000, 'snapshot');
  const snaps = (await http(d, 'GET', '/')).json.snapshots;
  results.push(await measure(d, 'snapshot restore', async () => {}));
  await d.stop();

  d = await startDaemon(['--images-dir', images.dir, '--pool-size', '1']);
  const poolReady = async () => (await http(d, 'GET', '/')).json.pool[pack].ready >= 1;
  results.push(await measure(d, 'warm pool hit', () => eventually(poolReady, 60_000, 'pool refill')));
  await d.stop();

  const cold = median(results[0]!.ms);
  console.log(`create latency, pack ${pack}, n=${n} each (${new Date().toISOString()})`);
  for (const r of results) {
    console.log(`${r.label.padEnd(18)} p50 ${fmt(median(r.ms)).padStart(9)}  p99 ${fmt(percentile(r.ms, 99)).padStart(9)}  ratio to cold ${(median(r.ms) / cold).toFixed(3)}  VMM RSS ${median(r.rss).toFixed(0)} MiB  (paths used: ${r.modes})`);
  }
  for (const [p, s] of Object.entries(snaps as Record<string, { bytes: number; build_ms: number }>)) {
    console.log(`snapshot ${p}: ${(s.bytes / 1048576).toFixed(1)} MiB (zstd -1), built in ${s.build_ms} ms`);
  }
} finally {
  images.cleanup();
}
