// Egress setup cost: POST /sandboxes with and without `network`, alternating, both cold boots
// (--snapshots off --pool-size 0), median of 5. Needs root. `node bench/egress-setup.ts`
// create with network vs without, side by side, median of 5 (cold boots both: --snapshots off --pool-size 0)
import { startDaemon, http } from '../test/helpers/daemon.ts';
const d = await startDaemon(['--pool-size', '0', '--snapshots', 'off', '--egress-dns', '127.0.0.1:9']);
const t = { without: [] as number[], with: [] as number[] };
for (let i = 0; i < 5; i++) {
  for (const kind of ['without', 'with'] as const) {
    const t0 = performance.now();
    const r = await http(d, 'POST', '/sandboxes', JSON.stringify(kind === 'with' ? { network: { allow: ['198.51.100.0/24'] } } : {}), { 'content-type': 'application/json' });
    t[kind].push(performance.now() - t0);
    if (r.status !== 201) throw new Error(r.text);
    await http(d, 'DELETE', `/sandboxes/${r.json.id}`);
  }
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[2]!.toFixed(0);
console.log(`create without network: median ${med(t.without)} ms (${t.without.map((x) => x.toFixed(0)).join(', ')})`);
console.log(`create with network:    median ${med(t.with)} ms (${t.with.map((x) => x.toFixed(0)).join(', ')})`);
await d.stop();
