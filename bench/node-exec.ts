// Node pack exec latency (issue 11, item 1): `console.log(6*7)` as a `code` exec through a real
// daemon, the first exec of a sandbox (cold: what the guest's page cache holds then depends on how
// the sandbox came up) and the ones after it (warm), for a cold-booted sandbox and for one restored
// from the node golden snapshot (whose VM ran `node -e ''` once before it was saved). Beside it:
// `node --version` (loading libnode and its libraries, no JavaScript), /bin/true, and python's
// `print(6*7)` fresh (a PYTHON* env entry keeps it off the fast path) and through its forkserver, for scale. Also prints how long the daemon took
// until every pack's golden snapshot was ready.
// Usage: node bench/node-exec.ts [warm execs per sandbox=10] [sandboxes per path=3]
import { startDaemon, http, eventually, type TestDaemon } from '../test/helpers/daemon.ts';
import { privateImagesDir } from '../test/helpers/private-images.ts';
import { row } from './stats.ts';

const warmN = Number(process.argv[2] ?? 10);
const sandboxes = Number(process.argv[3] ?? 3);
const images = privateImagesDir(); // its own snapshots/: the goldens are built by this run

interface Figures {
  first: number[];
  warm: number[];
  version: number[];
  trueExec: number[];
  bootModes: Set<string>;
}

async function timed(d: TestDaemon, id: string, body: object, expect?: string): Promise<number> {
  const t = performance.now();
  const r = await d.client.exec(id, { timeout_ms: 120_000, ...body });
  const ms = performance.now() - t;
  if (r.exit_code !== 0 || (expect !== undefined && r.stdout !== expect)) throw new Error(`unexpected: ${JSON.stringify(r)}`);
  return ms;
}

async function measure(d: TestDaemon): Promise<Figures> {
  const f: Figures = { first: [], warm: [], version: [], trueExec: [], bootModes: new Set() };
  for (let s = 0; s < sandboxes; s++) {
    const sb = await d.client.createSandbox({ language_pack: 'node' });
    f.bootModes.add(sb.boot_mode ?? '?');
    f.first.push(await timed(d, sb.id, { code: 'console.log(6*7)' }, '42\n'));
    for (let i = 0; i < warmN; i++) {
      f.warm.push(await timed(d, sb.id, { code: 'console.log(6*7)' }, '42\n'));
      if (i < 3) f.version.push(await timed(d, sb.id, { argv: ['node', '--version'] }));
      if (i < 3) f.trueExec.push(await timed(d, sb.id, { argv: ['true'] }));
    }
    await d.client.deleteSandbox(sb.id);
  }
  return f;
}

function print(label: string, f: Figures): void {
  console.log(`${label} (boot_mode ${[...f.bootModes].join(',')})`);
  console.log(row('  console.log(6*7): first exec of a sandbox', f.first));
  console.log(row('  console.log(6*7): later execs', f.warm));
  console.log(row('  node --version', f.version));
  console.log(row('  /bin/true', f.trueExec));
}

async function python(d: TestDaemon): Promise<{ fresh: number[]; fast: number[] }> {
  const sb = await d.client.createSandbox({ language_pack: 'python' });
  const fresh: number[] = [], fast: number[] = [];
  await timed(d, sb.id, { code: 'print(6*7)' }, '42\n');
  for (let i = 0; i < warmN; i++) {
    fresh.push(await timed(d, sb.id, { code: 'print(6*7)', env: { PYTHONUNBUFFERED: '1' } }, '42\n')); // a PYTHON* env entry: not the fast path
    fast.push(await timed(d, sb.id, { code: 'print(6*7)' }, '42\n'));
  }
  await d.client.deleteSandbox(sb.id);
  return { fresh, fast };
}

try {
  console.log(`node pack exec latency, ${sandboxes} sandboxes per path, ${warmN} later execs each (${new Date().toISOString()})`);
  let d = await startDaemon(['--images-dir', images.dir, '--snapshots', 'off', '--pool-size', '0']);
  const cold = await measure(d);
  await d.stop();

  const t0 = performance.now();
  d = await startDaemon(['--images-dir', images.dir, '--pool-size', '0']);
  const started = performance.now();
  const packs = Object.keys((await http(d, 'GET', '/')).json.snapshots);
  await eventually(async () => Object.values((await http(d, 'GET', '/')).json.snapshots as Record<string, { status: string }>).every((s) => s.status === 'ready'), 600_000, 'every golden');
  const ready = performance.now();
  const snaps = (await http(d, 'GET', '/')).json.snapshots as Record<string, { bytes: number; build_ms: number }>;
  const restored = await measure(d);
  const py = await python(d);
  await d.stop();

  print('cold boot (--snapshots off)', cold);
  print('restored from the golden snapshot', restored);
  console.log(row('python print(6*7), fresh interpreter', py.fresh));
  console.log(row('python print(6*7), forkserver', py.fast));
  console.log(`goldens of ${packs.length} packs (${packs.join(', ')}) ready ${((ready - started) / 1000).toFixed(1)} s after the daemon listened (${((ready - t0) / 1000).toFixed(1)} s after its start)`);
  for (const [p, s] of Object.entries(snaps)) console.log(`  snapshot ${p}: ${(s.bytes / 1048576).toFixed(1)} MiB, built in ${s.build_ms} ms`);
} finally {
  images.cleanup();
}
