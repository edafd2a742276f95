// File transfer throughput next to the raw control channel's, in one run.
//   raw:       an exec's stdout drained as it comes (`dd if=/dev/zero bs=64k`: busybox `head -c`
//              copies in small blocks and is itself the bottleneck under TCG), and N bytes written
//              to an exec's stdin under flow control (`cat > /dev/null`); also both through a file
//              on the guest's tmpfs (`cat > F`, `cat F`), to show what the guest filesystem costs.
//   files.ts:  SandboxFiles.writeFile / readFile over the same AgentClient (no HTTP).
//   HTTP:      PUT / GET /sandboxes/{id}/files on a real daemon (what a user sees).
// The raw and files.ts figures share one VM; the HTTP figures come from the daemon's own VM of the
// same size. The figures are taken in rounds, one of each per round, so that a change of host load
// (two cores shared with other work) hits all of them alike; medians over the rounds.
// Usage: node bench/files.ts [MiB=64] [rounds=5]
import { request } from 'node:http';
import { Readable } from 'node:stream';
import { SandboxFiles } from '../src/sandbox/files.ts';
import { QemuBackend } from '../src/vmm/qemu/qemu-backend.ts';
import { startDaemon } from '../test/helpers/daemon.ts';
import { bootTestVm } from '../test/helpers/vm.ts';
import { median } from './stats.ts';

const mib = Number(process.argv[2] ?? 64);
const reps = Number(process.argv[3] ?? 5);
const N = mib * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 0xa5);

/** N bytes in 64 KiB chunks, without allocating N bytes. */
function source(n: number): Readable {
  let left = n;
  return new Readable({
    read() {
      if (left <= 0) { this.push(null); return; }
      const k = Math.min(CHUNK.length, left);
      left -= k;
      this.push(k === CHUNK.length ? CHUNK : CHUNK.subarray(0, k));
    },
  });
}

async function drain(s: AsyncIterable<Buffer>): Promise<number> {
  let n = 0;
  for await (const b of s) n += b.length;
  return n;
}

const RAW_OUT = 'raw stdout (dd if=/dev/zero bs=64k)';
const RAW_IN = 'raw stdin (cat > /dev/null)';
const RAW_IN_FS = 'raw stdin into tmpfs (cat > /root/raw)';
const RAW_OUT_FS = 'raw stdout from tmpfs (cat /root/raw)';
const FILES_IN = 'files.ts writeFile';
const FILES_OUT = 'files.ts readFile';
const HTTP_IN = 'HTTP PUT /files (upload)';
const HTTP_OUT = 'HTTP GET /files (download)';

/** MiB/s of `fn` moving N bytes. */
async function rate(fn: () => Promise<number>): Promise<number> {
  const t = performance.now();
  const moved = await fn();
  const s = (performance.now() - t) / 1000;
  if (moved !== N) throw new Error(`moved ${moved} bytes, expected ${N}`);
  return mib / s;
}

const results = new Map<string, number[]>();
const record = async (label: string, fn: () => Promise<number>) => {
  const r = await rate(fn);
  results.set(label, [...(results.get(label) ?? []), r]);
};

const backend = new QemuBackend();
console.log(`backend qemu ${backend.info.version}, accel ${backend.info.accel}; python pack, 1 vCPU, 256 MiB; ${mib} MiB per transfer, ${reps} rounds (every figure once per round, interleaved, so load changes hit all alike); MiB/s`);
const { agent, stop } = await bootTestVm('python', {}, backend);
const d = await startDaemon(['--snapshots', 'off', '--pool-size', '0']);
try {
  // ---- agent level (raw channel and files.ts): one VM, this process ----
  const rawOut = async (argv: string[]) => {
    let n = 0;
    const h = agent.exec({ argv, timeoutMs: 600_000 }, { onStdout: (b) => { n += b.length; } });
    const x = await h.exited;
    if (x.exitCode !== 0) throw new Error(`${argv.join(' ')} exited ${x.exitCode}`);
    return n;
  };
  const rawIn = async (script: string) => {
    const h = agent.exec({ argv: ['sh', '-c', script], stdinOpen: true, timeoutMs: 600_000 });
    let n = 0;
    for await (const b of source(N)) { await h.writeStdin(b); n += b.length; }
    h.closeStdin();
    const x = await h.exited;
    if (x.exitCode !== 0) throw new Error(`${script} exited ${x.exitCode}`);
    return n;
  };
  const files = new SandboxFiles(agent, { timeoutMs: 60_000, transferTimeoutMs: 600_000, outputCap: 1 << 20 });

  // ---- HTTP: a real daemon in its own process, with its own VM of the same size ----
  const { id } = await d.client.createSandbox({ language_pack: 'python' });
  const url = (path: string) => `${d.url}/sandboxes/${id}/files?path=${encodeURIComponent(path)}`;
  const put = () => new Promise<number>((resolve, reject) => {
    const req = request(url('/root/h.bin'), { method: 'PUT', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let text = '';
      res.on('data', (b) => { text += b; });
      res.on('end', () => (res.statusCode === 201 ? resolve(JSON.parse(text).size) : reject(new Error(`PUT ${res.statusCode}: ${text}`))));
    });
    req.on('error', reject);
    source(N).pipe(req);
  });
  const get = () => new Promise<number>((resolve, reject) => {
    request(url('/root/h.bin'), (res) => {
      if (res.statusCode !== 200) reject(new Error(`GET ${res.statusCode}`));
      drain(res).then(resolve, reject);
    }).on('error', reject).end();
  });

  await rawOut(['head', '-c', String(1 << 20), '/dev/zero']); // warm both guests' page caches
  await d.client.exec(id, { argv: ['true'] });
  for (let i = 0; i < reps; i++) {
    await record(RAW_OUT, () => rawOut(['dd', 'if=/dev/zero', 'bs=65536', `count=${N / 65536}`, 'status=none']));
    await record(RAW_IN, () => rawIn('cat > /dev/null'));
    await record(RAW_IN_FS, () => rawIn('cat > /root/raw'));
    await record(RAW_OUT_FS, () => rawOut(['cat', '/root/raw']));
    await agent.run({ argv: ['rm', '-f', '/root/raw', '/root/f.bin'] }); // (a replace needs room for two copies)
    await record(FILES_IN, async () => (await files.writeFile('/root/f.bin', source(N), { maxBytes: Infinity })).size);
    await record(FILES_OUT, async () => drain(await files.readFile('/root/f.bin')));
    await d.client.exec(id, { argv: ['rm', '-f', '/root/h.bin'] });
    await record(HTTP_IN, put);
    await record(HTTP_OUT, get);
  }
  await d.client.deleteSandbox(id);
} finally {
  await stop();
  await d.stop();
}

const m = (k: string) => median(results.get(k)!);
for (const [label, xs] of results) {
  console.log(`${label.padEnd(42)} median ${m(label).toFixed(1).padStart(6)} MiB/s   (min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)})`);
}
const pct = (a: string, b: string) => `${((100 * m(a)) / m(b)).toFixed(0)}%`;
console.log('');
console.log(`upload:   HTTP ${pct(HTTP_IN, RAW_IN)} of raw stdin (files.ts ${pct(FILES_IN, RAW_IN)}); HTTP ${pct(HTTP_IN, RAW_IN_FS)} of raw stdin into the same tmpfs (files.ts ${pct(FILES_IN, RAW_IN_FS)})`);
console.log(`download: HTTP ${pct(HTTP_OUT, RAW_OUT)} of raw stdout (files.ts ${pct(FILES_OUT, RAW_OUT)}); HTTP ${pct(HTTP_OUT, RAW_OUT_FS)} of raw stdout from the same tmpfs (files.ts ${pct(FILES_OUT, RAW_OUT_FS)})`);
