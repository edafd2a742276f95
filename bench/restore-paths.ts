// Restore-to-ready by path, in one run, on the QEMU backend directly (no daemon): shared-memory
// clone vs whole-stream restore vs cold boot, each timed from the call to the agent's HELLO_ACK;
// the stream sizes; and the PSS (/proc/PID/smaps_rollup) of idle clones of each path, `alive` of
// them at once, before and after one exec each.
// Usage: node bench/restore-paths.ts [n=8] [pack=python] [alive=4]
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QemuBackend } from '../src/vmm/qemu/qemu-backend.ts';
import type { VmHandle } from '../src/vmm/backend.ts';
import { AgentClient } from '../src/agent/client.ts';
import { testBootSpec } from '../test/helpers/boot-spec.ts';
import { median, percentile, fmt } from './stats.ts';

const n = Number(process.argv[2] ?? 8);
const pack = process.argv[3] ?? 'python';
const alive = Number(process.argv[4] ?? 4);
const base = mkdtempSync(join(tmpdir(), 'emb-rp-'));
const backend = new QemuBackend({ sharedMemory: 'on' }); // the shared path is what is measured
const snaps = backend.snapshots;
let k = 0;
const spec = () => testBootSpec(`rp${k}`, join(base, String(k++)), { pack });
const code = pack === 'python' ? 'print(6*7)' : 'echo 42';
const pss = (pid: number) => Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) / 1024;

async function up(start: () => Promise<VmHandle>): Promise<{ vm: VmHandle; agent: AgentClient; ms: number }> {
  const t = performance.now();
  const vm = await start();
  const agent = new AgentClient(vm.control);
  await agent.helloUntil(Date.now() + 60_000);
  return { vm, agent, ms: performance.now() - t };
}
async function run(agent: AgentClient) {
  const r = await agent.run({ code, timeoutMs: 60_000 });
  if (r.stdout.toString() !== '42\n') throw new Error(`bad output ${r.stdout}`);
}

const dir = join(base, 'snapshot');
const shared = join(dir, 'shared');
const hidden = join(dir, 'shared.hidden');
try {
  const g = await up(() => backend.boot(spec()));
  await g.agent.run({ code: '', timeoutMs: 60_000 }); // as the launcher warms a golden
  const t0 = performance.now();
  await snaps!.save(g.vm, dir);
  const saveMs = performance.now() - t0;
  const paths: Record<string, { ms: number[]; pssIdle: number[]; pssExec: number[]; from: Set<string> }> = {};
  for (const label of ['shared-memory', 'stream', 'cold boot']) {
    if (label === 'stream') renameSync(shared, hidden); // the stream path, without a rebuild racing it:
    const start = label === 'cold boot' ? () => backend.boot(spec()) : () => snaps!.restore(spec(), dir);
    const r = paths[label] = { ms: [] as number[], pssIdle: [] as number[], pssExec: [] as number[], from: new Set<string>() };
    for (let i = 0; i < n; i++) {
      const c = await up(start);
      r.ms.push(c.ms);
      r.from.add(c.vm.restoredFrom ?? 'boot');
      await c.vm.stop(0);
      if (label === 'stream') { await snaps!.prepareShared!(spec(), dir); rmSync(shared, { recursive: true, force: true }); }
    }
    const group = [];
    for (let i = 0; i < alive; i++) group.push(await up(start));
    if (label === 'stream') { await snaps!.prepareShared!(spec(), dir); rmSync(shared, { recursive: true, force: true }); }
    r.pssIdle = group.map((c) => pss(c.vm.pid));
    for (const c of group) await run(c.agent);
    r.pssExec = group.map((c) => pss(c.vm.pid));
    await Promise.all(group.map((c) => c.vm.stop(0)));
    if (label === 'stream') renameSync(hidden, shared);
  }
  const cold = median(paths['cold boot']!.ms);
  console.log(`restore-to-ready (call -> HELLO_ACK), pack ${pack}, n=${n} each, QEMU ${backend.info.version} ${backend.info.accel} (${new Date().toISOString()})`);
  for (const [label, r] of Object.entries(paths)) {
    console.log(`${label.padEnd(14)} p50 ${fmt(median(r.ms)).padStart(8)}  p99 ${fmt(percentile(r.ms, 99)).padStart(8)}  ratio to cold ${(median(r.ms) / cold).toFixed(3)}  PSS idle ${median(r.pssIdle).toFixed(1)} MiB, after one exec ${median(r.pssExec).toFixed(1)} MiB (${alive} alive; path ${[...r.from].join(',')})`);
  }
  const sz = (f: string) => (statSync(f).size / 1048576).toFixed(2);
  const mem = statSync(join(shared, 'memory'));
  console.log(`streams: whole ${sz(join(dir, 'state.zst'))} MiB (zstd -1), shared-memory devices-only ${(statSync(join(shared, 'state.zst')).size / 1024).toFixed(0)} KiB; memory file ${(mem.size / 1048576).toFixed(0)} MiB long, ${(mem.blocks * 512 / 1048576).toFixed(1)} MiB allocated; save incl. building the shared unit ${fmt(saveMs)}`);
} finally {
  rmSync(base, { recursive: true, force: true });
}
