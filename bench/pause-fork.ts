// Pause, resume and fork of a live sandbox (docs/snapshots.md "Pause and resume"), side by side in
// one run: pause and resume times and the size on disk of a python sandbox holding a session with
// a million-int list and a background process; then N forks of it against N independent sandboxes
// brought to the same state, as the sum of their VMMs' PSS (/proc/PID/smaps_rollup: a page shared
// copy-on-write counts once over its sharers). `--shared-memory on` so forks can map one RAM file
// (`auto` is off for QEMU 7.2 as root: docs/security.md). `node bench/pause-fork.ts [N=3] [rounds=3]`.
// Prints figures; asserts nothing.
import { readFileSync } from 'node:fs';
import { startDaemon, http } from '../test/helpers/daemon.ts';
import { median } from './stats.ts';

const N = Number(process.argv[2] ?? 3);
const ROUNDS = Number(process.argv[3] ?? 3);
const d = await startDaemon(['--pool-size', '0', '--shared-memory', 'on']);
const post = (path: string, body?: unknown) => http(d, 'POST', path, body === undefined ? undefined : JSON.stringify(body), { 'content-type': 'application/json' });
const pssMib = (pid: number) => Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) / 1024;
const vmmPid = async (id: string) => (await http(d, 'GET', `/sandboxes/${id}`)).json.vmm_pid as number;

/** A python sandbox with the state the figures are about. */
async function prepared(): Promise<string> {
  const c = await post('/sandboxes', { language_pack: 'python' });
  if (c.status !== 201) throw new Error(c.text);
  const id = c.json.id as string;
  const s = await post(`/sandboxes/${id}/exec`, { code: 'x = list(range(10**6)); len(x)', session: 's' });
  if (s.status !== 200) throw new Error(s.text);
  await post(`/sandboxes/${id}/exec`, { argv: ['sh', '-c', 'while true; do date; sleep 1; done'], background: true });
  return id;
}

const made: string[] = [];
try {
  const pause: number[] = [];
  const resume: number[] = [];
  const bytes: number[] = [];
  const id = await prepared();
  made.push(id);
  for (let i = 0; i < ROUNDS; i++) {
    let t0 = performance.now();
    const p = await post(`/sandboxes/${id}/pause`);
    pause.push(performance.now() - t0);
    if (p.status !== 200) throw new Error(p.text);
    bytes.push(p.json.paused.bytes);
    t0 = performance.now();
    const r = await post(`/sandboxes/${id}/resume`);
    resume.push(performance.now() - t0);
    if (r.status !== 200) throw new Error(r.text);
  }
  console.log(`pause  (POST .../pause, client side):  median ${median(pause).toFixed(0)} ms (${pause.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`resume (POST .../resume, client side): median ${median(resume).toFixed(0)} ms (${resume.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`saved size on disk: median ${(median(bytes) / 1e6).toFixed(1)} MB for a ${(await http(d, 'GET', `/sandboxes/${id}`)).json.memory_mib} MiB guest`);

  const t0 = performance.now();
  const f = await post(`/sandboxes/${id}/fork`, { count: N });
  const forkMs = performance.now() - t0;
  if (f.status !== 201) throw new Error(f.text);
  const forks = (f.json.sandboxes as { id: string }[]).map((x) => x.id);
  made.push(...forks);
  const independent: string[] = [];
  for (let i = 0; i < N; i++) independent.push(await prepared());
  made.push(...independent);
  // Each fork and each independent sandbox runs one cell, so both have touched what a cell touches.
  for (const x of [...forks, ...independent]) await post(`/sandboxes/${x}/exec`, { code: 'len(x)', session: 's' });
  const sum = async (ids: string[]) => { let t = 0; for (const x of ids) t += pssMib(await vmmPid(x)); return t; };
  const forkPss = await sum(forks);
  const indPss = await sum(independent);
  console.log(`fork of ${N}: ${forkMs.toFixed(0)} ms`);
  console.log(`PSS of ${N} forks: ${forkPss.toFixed(0)} MiB (${(forkPss / N).toFixed(1)} each); of ${N} independent sandboxes in the same state: ${indPss.toFixed(0)} MiB (${(indPss / N).toFixed(1)} each); ratio ${(forkPss / indPss).toFixed(2)}; the parent: ${pssMib(await vmmPid(id)).toFixed(0)} MiB`);
} finally {
  for (const x of made) await http(d, 'DELETE', `/sandboxes/${x}`);
  await d.stop();
}
