// Python one-shot exec latency, in one run (issue 5, item 5): `print(6*7)` through a fresh
// interpreter in the guest (EXEC fresh_process), through the guest's forkserver (the fast path,
// docs/protocol.md "Fast path"), and bare `python3 -c 'print(6*7)'` on the host. Agent level (no
// HTTP): QEMU backend + AgentClient, one VM, the python pack.
// Usage: node bench/exec-latency.ts [execs=30]
import { spawnSync } from 'node:child_process';
import type { ExecRequest } from '../src/agent/client.ts';
import { QemuBackend } from '../src/vmm/qemu/qemu-backend.ts';
import { bootTestVm } from '../test/helpers/vm.ts';
import { median, row } from './stats.ts';

const execs = Number(process.argv[2] ?? 30);
const backend = new QemuBackend();
console.log(`backend qemu ${backend.info.version}, accel ${backend.info.accel}; python pack; ${execs} execs per figure, interleaved`);

const { agent, stop } = await bootTestVm('python', {}, backend);
try {

  async function once(req: ExecRequest, fast: boolean): Promise<[number, number]> {
    const t = performance.now();
    const r = await agent.run({ timeoutMs: 60_000, ...req });
    const ms = performance.now() - t;
    if (r.stdout.toString() !== '42\n' && req.code) throw new Error(`unexpected output ${r.stdout}${r.stderr}`);
    if (req.code && r.fastPath !== fast) throw new Error(`fast path ${r.fastPath}, expected ${fast}`);
    return [ms, r.durationUs / 1000];
  }
  function host(): number {
    const t = performance.now();
    const r = spawnSync('python3', ['-c', 'print(6*7)'], { env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' } });
    const ms = performance.now() - t;
    if (r.stdout.toString() !== '42\n') throw new Error(`host python: ${r.stdout}${r.stderr}`);
    return ms;
  }

  const code = { code: 'print(6*7)' };
  const [firstFast] = await once(code, true); // starts the forkserver
  const fresh: number[] = [], freshGuest: number[] = [], fast: number[] = [], fastGuest: number[] = [];
  const bare: number[] = [], hostPy: number[] = [];
  await once({ ...code, freshProcess: true }, false); // warm the page cache for the fresh path too
  for (let i = 0; i < execs; i++) { // interleaved, so that drift in host load hits all figures alike
    const [a, ag] = await once({ ...code, freshProcess: true }, false);
    fresh.push(a); freshGuest.push(ag);
    const [b, bg] = await once(code, true);
    fast.push(b); fastGuest.push(bg);
    bare.push((await once({ argv: ['true'] }, false))[0]);
    hostPy.push(host());
  }
  console.log(row('first code exec (starts the forkserver)', [firstFast]));
  console.log(row('print(6*7) fresh interpreter, round trip', fresh));
  console.log(row('  of which measured in the guest', freshGuest));
  console.log(row('print(6*7) fast path, round trip', fast));
  console.log(row('  of which measured in the guest', fastGuest));
  console.log(row('exec of /bin/true, round trip', bare));
  console.log(row("host: python3 -c 'print(6*7)'", hostPy));
  const m = { fresh: median(fresh), fast: median(fast), host: median(hostPy) };
  console.log(`ratios of medians: fresh/fast ${(m.fresh / m.fast).toFixed(1)}x, fast/host ${(m.fast / m.host).toFixed(2)}x, fresh/host ${(m.fresh / m.host).toFixed(1)}x`);
} finally {
  await stop();
}
