// The language packs in real microVMs over HTTP (issue 11): node runs `code` and argv execs;
// `bash -l -c` works in every pack that has a shell; python-data computes with numpy, reads a CSV
// uploaded through the files API with pandas and saves a matplotlib PNG of the figure's size. One
// daemon; one sandbox per pack, shared by the cases (each uses its own paths). No golden snapshots
// and no warm pool: exactly one boot per pack (two cores are shared).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import type { ExecOptions, ExecResponse } from '../src/sdk/client.ts';

const SHELL_PACKS = ['shell', 'python', 'node', 'python-data'] as const;
type Pack = (typeof SHELL_PACKS)[number];
/** python-data imports take seconds under software emulation; nothing here waits on time. */
const EXEC_TIMEOUT_MS = 300_000;

let d: TestDaemon;
const sandboxes = new Map<Pack, string>();

before(async () => {
  d = await startDaemon(['--snapshots', 'off', '--pool-size', '0']);
  for (const pack of SHELL_PACKS) sandboxes.set(pack, (await d.client.createSandbox({ language_pack: pack })).id);
});
after(async () => {
  for (const id of sandboxes.values()) await d.client.deleteSandbox(id).catch(() => {});
  assert.equal(await d.stop(), 0, d.log());
});

function exec(pack: Pack, body: ExecOptions): Promise<ExecResponse> {
  return d.client.exec(sandboxes.get(pack)!, { timeout_ms: EXEC_TIMEOUT_MS, ...body });
}

async function download(pack: Pack, path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await d.client.downloadFile(sandboxes.get(pack)!, path)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('node: a code exec runs in node -e and answers what it prints', async () => {
  const r = await exec('node', { code: 'console.log(6*7)' });
  assert.deepEqual([r.stdout, r.stderr, r.exit_code], ['42\n', '', 0]);
});

test('node: code gets env, cwd, stdin and require; its exit code and uncaught errors come back', async () => {
  const r = await exec('node', {
    code: 'const fs = require("fs"); console.log(process.env.A, process.cwd(), fs.readFileSync(0, "utf8"))',
    env: { A: 'x y' },
    cwd: '/tmp',
    stdin: 'in',
  });
  assert.deepEqual([r.stdout, r.exit_code], ['x y /tmp in\n', 0]);
  assert.equal((await exec('node', { code: 'process.exitCode = 3' })).exit_code, 3);
  const thrown = await exec('node', { code: 'throw new Error("boom-" + 6*7)' });
  assert.equal(thrown.exit_code, 1);
  assert.match(thrown.stderr, /Error: boom-42/);
});

test('node: argv execs run node and the shell tools like in the other packs', async () => {
  const p = await exec('node', { argv: ['node', '-p', 'process.versions.node.split(".")[0]'] });
  assert.deepEqual([p.stdout, p.exit_code], ['18\n', 0]);
  const sh = await exec('node', { argv: ['sh', '-c', 'echo "$0" | tr a-z A-Z; command -v node', 'ok'] });
  assert.equal(sh.stdout, 'OK\n/usr/bin/node\n');
  assert.equal((await exec('node', { argv: ['no-such-program'] })).exit_code, 127);
});

test('bash -l -c works in every pack with a shell; /bin/sh stays busybox', async () => {
  for (const pack of SHELL_PACKS) {
    const r = await exec(pack, { argv: ['bash', '-l', '-c', 'echo $0; type bash; command -v env which; echo "$PATH"'] });
    assert.equal(r.stderr, '', pack);
    assert.equal(
      r.stdout,
      'bash\nbash is /usr/bin/bash\n/usr/bin/env\n/usr/bin/which\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n',
      pack,
    );
    const sh = await exec(pack, { argv: ['readlink', '/bin/sh'] });
    assert.equal(sh.stdout, 'busybox\n', pack);
  }
  // A login shell keeps the PATH the exec was given.
  const kept = await exec('shell', { argv: ['bash', '-l', '-c', 'echo "$PATH"; echo "${BASH_VERSION%%.*}"'], env: { PATH: '/opt/x:/usr/bin:/bin' } });
  assert.equal(kept.stdout, '/opt/x:/usr/bin:/bin\n5\n');
});

test('python-data: numpy computes a matrix product exactly', async () => {
  const r = await exec('python-data', {
    code: 'import numpy as np\na = np.arange(1, 7, dtype=np.int64).reshape(2, 3)\nb = np.arange(7, 13, dtype=np.int64).reshape(3, 2)\nprint((a @ b).tolist(), round(float(np.linalg.det(np.array([[2.0, 1.0], [0.0, 4.0]]))), 9))',
  });
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, '[[58, 64], [139, 154]] 8.0\n');
});

test('python-data: pandas reads a CSV uploaded through the files API and answers an aggregate', async () => {
  const rows = ['city,month,sales', ...Array.from({ length: 120 }, (_, i) => `${['oslo', 'lima', 'pune'][i % 3]},${(i % 12) + 1},${i * 7 + 3}`)];
  await d.client.uploadFile(sandboxes.get('python-data')!, '/root/packs-test/sales.csv', `${rows.join('\n')}\n`);
  const want: Record<string, number> = {};
  for (const line of rows.slice(1)) {
    const [city, , sales] = line.split(',');
    want[city!] = (want[city!] ?? 0) + Number(sales);
  }
  const r = await exec('python-data', {
    code: 'import json, pandas as pd\ndf = pd.read_csv("/root/packs-test/sales.csv")\nprint(json.dumps({k: int(v) for k, v in df.groupby("city")["sales"].sum().items()}))\nprint(len(df))',
  });
  assert.equal(r.stderr, '');
  const [sums, n] = r.stdout.trim().split('\n');
  assert.deepEqual(JSON.parse(sums!), want);
  assert.equal(n, '120');
});

test('python-data: matplotlib (Agg by default) saves a PNG of the figure\'s size in pixels', async () => {
  const r = await exec('python-data', {
    code: [
      'import matplotlib, matplotlib.pyplot as plt',
      'fig = plt.figure(figsize=(4, 2.5), dpi=80)',
      'plt.plot([0, 1, 2], [2, 0, 1]); plt.title(r"$\\sigma^2$ by day")',
      'fig.savefig("/root/packs-test/chart.png")',
      'print(matplotlib.get_backend())',
    ].join('\n'),
  });
  assert.equal(r.stderr, '', 'no font cache rebuild, no backend fallback');
  assert.equal(r.stdout, 'agg\n');
  const png = await download('python-data', '/root/packs-test/chart.png');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR', 'the first chunk is IHDR');
  assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [320, 200], 'width and height: figsize x dpi');
});
