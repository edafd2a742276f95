// Create and exec latency over the HTTP API of a real daemon (what a user sees).
// Usage: node bench/http.ts [creates=5] [execs=20]
import { startDaemon } from '../test/helpers/daemon.ts';
import { row } from './stats.ts';

const creates = Number(process.argv[2] ?? 5);
const execs = Number(process.argv[3] ?? 20);
const d = await startDaemon();
const info = await d.client.info() as { backend: { name: string; accel: string } };
console.log(`emberd on ${d.addr}, backend ${info.backend.name} (${info.backend.accel}); ${creates} creates, ${execs} execs each`);
const createMs: number[] = [];
const deleteMs: number[] = [];
const execMs: number[] = [];
const guestMs: number[] = [];
try {
  for (let i = 0; i < creates; i++) {
    let t = performance.now();
    const { id } = await d.client.createSandbox({ language_pack: 'python' });
    createMs.push(performance.now() - t);
    await d.client.exec(id, { code: 'print(6*7)' }); // first exec pays the cold page cache
    for (let j = 0; j < execs; j++) {
      t = performance.now();
      const r = await d.client.exec(id, { code: 'print(6*7)' });
      execMs.push(performance.now() - t);
      guestMs.push(r.duration_ms);
    }
    t = performance.now();
    await d.client.deleteSandbox(id);
    deleteMs.push(performance.now() - t);
  }
} finally {
  await d.stop();
}
console.log(row('POST /sandboxes (python)', createMs));
console.log(row('POST /exec print(6*7), over HTTP', execMs));
console.log(row('  duration_ms reported by the guest', guestMs));
console.log(row('DELETE /sandboxes/{id}', deleteMs));
