// Density: how many idle sandboxes fit in a memory budget, and whether exec slows as they pile up.
// Creates idle sandboxes (restored from the golden snapshot, pool off) until the sum of their VMMs'
// PSS (/proc/PID/smaps_rollup: shared pages counted once over all sharers) reaches the budget,
// then prints PSS per sandbox, host MemAvailable before and after, and exec p50 of `print(6*7)`
// (or `echo 42`) on the first and on the last sandbox. It never uses a budget the host cannot
// hold: the budget is capped at MemAvailable minus a 1 GiB reserve.
// Usage: node bench/density.ts [--budget-mib 4096] [--pack python] [--execs 20] [--max 4096]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startDaemon, http, eventually } from '../test/helpers/daemon.ts';
import { privateImagesDir } from '../test/helpers/private-images.ts';
import { median, fmt } from './stats.ts';

const { values } = parseArgs({ options: {
  'budget-mib': { type: 'string', default: '4096' },
  pack: { type: 'string', default: 'python' },
  execs: { type: 'string', default: '20' },
  max: { type: 'string', default: '4096' },
} });
const pack = values.pack!;
const execs = Number(values.execs);
const RESERVE_MIB = 1024;

function memAvailableMiB(): number {
  return Number(/MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) / 1024;
}
function pssMiB(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const availBefore = memAvailableMiB();
const budget = Math.min(Number(values['budget-mib']), availBefore - RESERVE_MIB);
if (!(budget > 0)) throw new Error(`not enough memory: MemAvailable ${availBefore.toFixed(0)} MiB leaves no budget above the ${RESERVE_MIB} MiB reserve`);
const images = privateImagesDir();
const d = await startDaemon(['--images-dir', images.dir, '--shared-memory', process.env.EMBERD_SHARED_MEMORY ?? 'on', '--pool-size', '0', '--max-sandboxes', values.max!, '--sandbox-timeout', '0', '--max-sandbox-timeout', '0']);
const ids: string[] = [];
const pids: number[] = [];
const code = pack === 'python' ? 'print(6*7)' : 'echo 42';
async function execP50(id: string): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < execs; i++) {
    const t = performance.now();
    const r = await d.client.exec(id, { code });
    ms.push(performance.now() - t);
    if (r.stdout !== '42\n') throw new Error(`bad output ${JSON.stringify(r.stdout)}`);
  }
  return median(ms);
}
try {
  await eventually(async () => (await http(d, 'GET', '/')).json.snapshots[pack].status === 'ready', 180_000, 'golden snapshot');
  const modes = new Map<string, number>();
  let total = 0;
  let firstP50 = NaN;
  while (total < budget && ids.length < Number(values.max)) {
    const sb = await d.client.createSandbox({ language_pack: pack });
    ids.push(sb.id);
    modes.set(sb.boot_mode ?? '?', (modes.get(sb.boot_mode ?? '?') ?? 0) + 1);
    const pid = (await d.client.getSandbox(sb.id)).vmm_pid!;
    pids.push(pid);
    // The first sandbox's exec p50 is taken while it is alone; every sandbox runs one exec, as an agent's would.
    if (ids.length === 1) firstP50 = await execP50(sb.id);
    else await d.client.exec(sb.id, { code });
    // PSS of all: a new sharer lowers everyone's share of the common pages.
    total = pids.reduce((s, p) => s + pssMiB(p), 0);
    if (memAvailableMiB() < RESERVE_MIB) break;
  }
  const lastP50 = await execP50(ids.at(-1)!);
  const pss = pids.map(pssMiB);
  console.log(`density, pack ${pack}, budget ${budget.toFixed(0)} MiB of summed VMM PSS (${new Date().toISOString()})`);
  console.log(`sandboxes alive: ${ids.length} (boot modes: ${[...modes].map(([m, k]) => `${m} ${k}`).join(', ')}), each ran one exec`);
  console.log(`PSS per sandbox (smaps_rollup of its VMM): median ${median(pss).toFixed(1)} MiB, min ${Math.min(...pss).toFixed(1)}, max ${Math.max(...pss).toFixed(1)}, sum ${pss.reduce((a, b) => a + b, 0).toFixed(0)} MiB`);
  console.log(`host MemAvailable: ${availBefore.toFixed(0)} MiB before, ${memAvailableMiB().toFixed(0)} MiB with them alive (${((availBefore - memAvailableMiB()) / ids.length).toFixed(1)} MiB per sandbox)`);
  console.log(`exec p50 of ${JSON.stringify(code)} over HTTP, ${execs} each: first sandbox (alone) ${fmt(firstP50)}, last (${ids.length} alive) ${fmt(lastP50)}, ratio ${(lastP50 / firstP50).toFixed(2)}`);
} finally {
  for (const id of ids) await d.client.deleteSandbox(id).catch(() => {});
  await d.stop();
  images.cleanup();
}
