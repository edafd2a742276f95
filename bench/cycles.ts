// Leak check under churn (issue 10, item 6): N create -> exec -> delete cycles against a real
// daemon, printing its open fds, RSS and run-dir entries, and the VMMs left, before and after.
// A bench, not a test: it prints figures and says what grew; nothing here is timed.
// Usage: node bench/cycles.ts [cycles=1000] [pack=shell]
import { readdirSync, readFileSync } from 'node:fs';
import { startDaemon } from '../test/helpers/daemon.ts';
import { rssKib, vmmsBelow } from '../test/helpers/procs.ts';

const cycles = Number(process.argv[2] ?? 1000);
const pack = process.argv[3] ?? 'shell';
const d = await startDaemon(['--pool-size', '2']);
const pid = d.proc.pid!;
const fds = () => readdirSync(`/proc/${pid}/fd`).length;
const runDirEntries = () => readdirSync(d.runDir).filter((n) => n.startsWith('sb_')).length;
const threads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const sample = () => ({ fds: fds(), rss_mib: +(rssKib(pid) / 1024).toFixed(1), threads: threads(), run_dir_sandboxes: runDirEntries(), vmms: vmmsBelow(pid).length });

try {
  // Warm-up: the pool and the goldens are made, the JIT has run; measure from a steady state.
  for (let i = 0; i < 20; i++) {
    const { id } = await d.client.createSandbox({ language_pack: pack });
    await d.client.exec(id, { code: 'echo warm' });
    await d.client.deleteSandbox(id);
  }
  const before = sample();
  console.log(`emberd pid ${pid}, ${cycles} cycles of create(${pack}) -> exec -> delete`);
  console.log('before', JSON.stringify(before));
  const t0 = performance.now();
  let failed = 0;
  for (let i = 1; i <= cycles; i++) {
    try {
      const { id } = await d.client.createSandbox({ language_pack: pack });
      const r = await d.client.exec(id, { code: 'echo $((6*7))' });
      if (r.stdout !== '42\n') throw new Error(`exec answered ${JSON.stringify(r.stdout)}`);
      await d.client.deleteSandbox(id);
    } catch (e) {
      failed++;
      console.log(`cycle ${i}: ${(e as Error).message}`);
    }
    if (i % 100 === 0) console.log(`after ${i}`, JSON.stringify(sample()));
  }
  const seconds = (performance.now() - t0) / 1000;
  // Background refills settle before the last look.
  await new Promise((r) => setTimeout(r, 5000));
  const after = sample();
  console.log('after', JSON.stringify(after));
  console.log(`${cycles} cycles in ${seconds.toFixed(0)} s (${(cycles / seconds).toFixed(1)}/s), ${failed} failed; fds ${before.fds} -> ${after.fds}, RSS ${before.rss_mib} -> ${after.rss_mib} MiB, VMMs ${before.vmms} -> ${after.vmms} (the pool's), run-dir sandboxes ${before.run_dir_sandboxes} -> ${after.run_dir_sandboxes}`);
} finally {
  await d.stop();
}
