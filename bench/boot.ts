// Boot-to-ready and exec round trip at the agent level (no HTTP): QEMU backend + AgentClient.
// Usage: node bench/boot.ts [boots=5] [execs=20]
import { QemuBackend } from '../src/vmm/qemu/qemu-backend.ts';
import { bootTestVm } from '../test/helpers/vm.ts';
import { row } from './stats.ts';

const boots = Number(process.argv[2] ?? 5);
const execs = Number(process.argv[3] ?? 20);
const backend = new QemuBackend();
console.log(`backend qemu ${backend.info.version}, accel ${backend.info.accel}; python pack; ${boots} boots, ${execs} execs each`);

const bootMs: number[] = [];
const guestUptime: number[] = [];
const firstExec: number[] = [];
const warmExec: number[] = [];
const guestExec: number[] = [];
const shellExec: number[] = [];
const ping: number[] = [];

for (let i = 0; i < boots; i++) {
  const t0 = performance.now();
  const { agent, ack, stop } = await bootTestVm('python', {}, backend);
  bootMs.push(performance.now() - t0);
  guestUptime.push(ack.uptimeMs);
  for (let j = 0; j < execs; j++) {
    const t = performance.now();
    const r = await agent.run({ code: 'print(6*7)', timeoutMs: 60_000 });
    const ms = performance.now() - t;
    if (r.stdout.toString() !== '42\n') throw new Error(`unexpected output ${r.stdout}`);
    if (j === 0) firstExec.push(ms); else { warmExec.push(ms); guestExec.push(r.durationUs / 1000); }
  }
  for (let j = 0; j < execs; j++) {
    const t = performance.now();
    await agent.run({ argv: ['true'], timeoutMs: 60_000 });
    shellExec.push(performance.now() - t);
    ping.push((await agent.ping(5000)) / 1000);
  }
  await stop();
}

console.log(row('boot to ready (qemu start -> HELLO_ACK)', bootMs));
console.log(row('  of which guest uptime at HELLO', guestUptime));
console.log(row('print(6*7) first exec after boot', firstExec));
console.log(row('print(6*7) round trip, warm', warmExec));
console.log(row('print(6*7) duration measured in guest', guestExec));
console.log(row('exec of /bin/true round trip', shellExec));
console.log(row('ping round trip', ping));
