// emberd against its peers, in one run: `print(6*7)` by host python3, bubblewrap, gVisor
// (`runsc --platform=ptrace --network=none do`), an exec in an existing emberd sandbox (warm, over
// HTTP, spaced and back to back), and emberd one-shot (create + exec + delete over HTTP, the
// first exec timed apart). Process peers are timed from spawn to exit (spawnSync); emberd from
// the request to the whole answer (fetch, keep-alive), and also through `curl` as a user would.
// Runs are interleaved round by round, so drift in host load hits every peer alike. Missing
// bubblewrap or runsc is installed from Debian with apt-get; a peer that still cannot run is
// skipped with the reason. Prints figures and ratios; asserts nothing about time.
// Usage: node bench/peers.ts [rounds=20] [spacing_ms=100]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startDaemon, http, eventually, type TestDaemon } from '../test/helpers/daemon.ts';
import { privateImagesDir } from '../test/helpers/private-images.ts';
import { median, percentile, fmt } from './stats.ts';

const rounds = Number(process.argv[2] ?? 20);
const spacingMs = Number(process.argv[3] ?? 100);
const CODE = 'print(6*7)';
const PY = '/usr/bin/python3';
const ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `bin` on PATH, installing Debian package `pkg` when it is missing; the reason when it cannot. */
function ensureTool(bin: string, pkg: string): string | undefined {
  const which = () => spawnSync('sh', ['-c', `command -v ${bin}`], { env: ENV, encoding: 'utf8' }).stdout.trim();
  if (which()) return undefined;
  if (process.getuid?.() !== 0) return `${bin} is missing and installing ${pkg} needs root (apt-get install ${pkg})`;
  console.error(`installing ${pkg} from Debian for the ${bin} peer...`);
  let r = spawnSync('apt-get', ['install', '-y', '-qq', pkg], { env: { ...ENV, DEBIAN_FRONTEND: 'noninteractive' }, encoding: 'utf8' });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { env: ENV });
    r = spawnSync('apt-get', ['install', '-y', '-qq', pkg], { env: { ...ENV, DEBIAN_FRONTEND: 'noninteractive' }, encoding: 'utf8' });
  }
  return which() ? undefined : `apt-get install ${pkg} failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`;
}

interface Peer {
  label: string;
  how: string;
  /** One measured run, in ms (throws when the answer is wrong). */
  run?: () => number | Promise<number>;
  skipped?: string;
  ms: number[];
}

function processPeer(label: string, argv: string[], how: string, needs?: [string, string]): Peer {
  const peer: Peer = { label, how, ms: [] };
  const missing = needs && ensureTool(...needs);
  if (missing) return { ...peer, skipped: missing };
  const once = () => {
    const t = performance.now();
    const r = spawnSync(argv[0]!, argv.slice(1), { env: ENV, encoding: 'utf8' });
    const ms = performance.now() - t;
    if (r.stdout !== '42\n') throw new Error(`exit ${r.status}: ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
    return ms;
  };
  try { once(); } catch (e) { return { ...peer, skipped: `a trial run failed: ${(e as Error).message}` }; }
  return { ...peer, run: once };
}

async function execOnce(d: TestDaemon, id: string): Promise<number> {
  const t = performance.now();
  const r = await http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ code: CODE }), { 'content-type': 'application/json' });
  const ms = performance.now() - t;
  if (r.json?.stdout !== '42\n') throw new Error(`exec: ${r.status} ${r.text.slice(0, 300)}`);
  return ms;
}

function curlPeer(d: TestDaemon, id: string): Peer {
  const peer: Peer = { label: 'emberd warm exec (curl)', how: `curl -s -X POST ${d.url}/sandboxes/ID/exec -d '{"code":"${CODE}"}'`, ms: [] };
  const argv = ['curl', '-s', '-X', 'POST', '-H', 'content-type: application/json', '-d', JSON.stringify({ code: CODE }), `${d.url}/sandboxes/${id}/exec`];
  if (!spawnSync('sh', ['-c', 'command -v curl'], { env: ENV }).stdout.length) return { ...peer, skipped: 'curl is not installed' };
  return {
    ...peer,
    run: () => {
      const t = performance.now();
      const r = spawnSync(argv[0]!, argv.slice(1), { env: ENV, encoding: 'utf8' });
      const ms = performance.now() - t;
      if (!r.stdout.includes('"stdout":"42\\n"')) throw new Error(`curl: ${r.stdout.slice(0, 300)}`);
      return ms;
    },
  };
}

const firstExec: number[] = [];
const createMs: number[] = [];
const deleteMs: number[] = [];
const bootModes = new Map<string, number>();

async function oneShot(d: TestDaemon): Promise<number> {
  const t0 = performance.now();
  const c = await http(d, 'POST', '/sandboxes', JSON.stringify({ language_pack: 'python' }), { 'content-type': 'application/json' });
  if (c.status !== 201) throw new Error(`create: ${c.status} ${c.text.slice(0, 300)}`);
  const t1 = performance.now();
  bootModes.set(c.json.boot_mode, (bootModes.get(c.json.boot_mode) ?? 0) + 1);
  const e = await execOnce(d, c.json.id);
  const t2 = performance.now();
  const del = await http(d, 'DELETE', `/sandboxes/${c.json.id}`);
  if (del.status !== 204) throw new Error(`delete: ${del.status}`);
  const t3 = performance.now();
  createMs.push(t1 - t0); firstExec.push(e); deleteMs.push(t3 - t2);
  return t3 - t0;
}

if (!existsSync(PY)) throw new Error(`${PY} is missing: apt-get install python3`);
const peers: Peer[] = [
  processPeer('host python3 -c', [PY, '-c', CODE], `${PY} -c '${CODE}'`),
  processPeer('bubblewrap', ['bwrap', '--unshare-all', '--die-with-parent', '--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp', PY, '-c', CODE],
    `bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp ${PY} -c`, ['bwrap', 'bubblewrap']),
  processPeer('gVisor runsc do', ['runsc', '--platform=ptrace', '--network=none', 'do', PY, '-c', CODE],
    `runsc --platform=ptrace --network=none do ${PY} -c`, ['runsc', 'runsc']),
];

async function poolSettled(): Promise<boolean> {
  const pool = (await http(d, 'GET', '/')).json.pool as Record<string, { size: number; ready: number; filling: number }> | null;
  return Object.values(pool ?? {}).every((p) => p.ready >= p.size && p.filling === 0);
}

const images = privateImagesDir(); // its own snapshots, built here: no other daemon's in the way
let d: TestDaemon;
try {
  d = await startDaemon(['--images-dir', images.dir]);
} catch (e) {
  images.cleanup(); // a daemon that did not start left nothing else of ours
  throw e;
}
try {
  await eventually(async () => (await http(d, 'GET', '/')).json.snapshots?.python?.status === 'ready', 300_000, 'python golden snapshot');
  await eventually(poolSettled, 300_000, 'every pack\'s pool filled');
  const sb = await d.client.createSandbox({ language_pack: 'python' });
  await execOnce(d, sb.id);
  const warm: Peer = { label: 'emberd warm exec (HTTP), spaced', how: `POST /sandboxes/ID/exec {"code":"${CODE}"}, ${spacingMs} ms apart`, run: () => execOnce(d, sb.id), ms: [] };
  const backToBack: Peer = { label: 'emberd warm exec (HTTP), back to back', how: '10 requests in a row per round, each timed', ms: [] };
  const curl = curlPeer(d, sb.id);
  const shot: Peer = { label: 'emberd one-shot create+exec+delete', how: 'POST /sandboxes, POST exec, DELETE over HTTP, pool on (defaults)', run: () => oneShot(d), ms: [] };
  const all = [...peers, warm, backToBack, curl, shot];

  for (let i = 0; i < rounds; i++) {
    for (const p of [...peers, warm, curl]) {
      if (!p.run) continue;
      await pause(spacingMs);
      p.ms.push(await p.run());
    }
    for (let j = 0; j < 10; j++) backToBack.ms.push(await execOnce(d, sb.id));
    // Spaced so the pool has refilled, as for one-shot users who come now and then: a refill still
    // running would take CPU from the exec (2 cores under TCG). The wait is not in the figure.
    await eventually(poolSettled, 120_000, 'pool refill');
    shot.ms.push(await oneShot(d));
  }
  await d.client.deleteSandbox(sb.id);

  const base = median(peers[0]!.ms);
  const gvisor = peers[2]!.ms.length ? median(peers[2]!.ms) : NaN;
  console.log(`print(6*7), ${rounds} rounds interleaved, ${new Date().toISOString()}; ${d.url} with default flags (snapshots on, pool on)`);
  console.log(`${'peer'.padEnd(40)} ${'p50'.padStart(9)} ${'mean'.padStart(9)} ${'p90'.padStart(9)}  ${'x host'.padStart(7)} ${'x gVisor'.padStart(8)}  how`);
  for (const p of all) {
    if (p.skipped || !p.ms.length) { console.log(`${p.label.padEnd(40)} skipped: ${p.skipped ?? 'no runs'}`); continue; }
    const mean = p.ms.reduce((a, b) => a + b, 0) / p.ms.length;
    const m = median(p.ms);
    console.log(`${p.label.padEnd(40)} ${fmt(m).padStart(9)} ${fmt(mean).padStart(9)} ${fmt(percentile(p.ms, 90)).padStart(9)}  ${(m / base).toFixed(2).padStart(7)} ${(m / gvisor).toFixed(2).padStart(8)}  ${p.how}`);
  }
  console.log(`one-shot parts (p50): create ${fmt(median(createMs))}, first exec ${fmt(median(firstExec))} (${(median(firstExec) / median(warm.ms)).toFixed(2)}x a warm exec), delete ${fmt(median(deleteMs))}; boot modes ${[...bootModes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
} finally {
  await d.stop();
  images.cleanup();
}
