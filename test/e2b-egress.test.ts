// The official E2B SDK's network options on create, end to end (docs/e2b.md "Network"): against
// two hosts this test creates in their own network namespaces, as test/e2e-egress.test.ts does
// (an "allowed" host 198.51.100.2 and a "denied" host 198.51.100.6, documentation addresses,
// skipped if the host uses them), from python's urllib in the guest. Skipped, saying why, where
// root, netns or nft are missing.
// First: it keeps the real fetch before daemon.ts checks the global one (see the helper).
import { startDaemon, eventually } from './helpers/e2b-fetch.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Sandbox, ALL_TRAFFIC, type SandboxOpts } from 'e2b';
import { egressUnavailable } from '../src/sandbox/egress/host-net.ts';
import { makeTestHost, removeTestHost, testNetsInUse } from './helpers/test-hosts.ts';


const tag = `${process.pid % 10000}`;
const HOSTS = {
  ok: { ns: `emtest-eok-${tag}`, veth: `eeok${tag}`, host: '198.51.100.1', peer: '198.51.100.2', word: 'allowed-host' },
  no: { ns: `emtest-eno-${tag}`, veth: `eeno${tag}`, host: '198.51.100.5', peer: '198.51.100.6', word: 'denied-host' },
};
const PORT = 8080;

const skip = egressUnavailable() ?? (existsSync('/usr/bin/python3') ? undefined : '/usr/bin/python3 is needed for the test servers') ?? testNetsInUse(['198.51.100.']);
if (skip) console.log(`# e2b-egress skipped: ${skip}`);

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });
const servers: ChildProcess[] = [];
type Daemon = Awaited<ReturnType<typeof startDaemon>>;
let d: Daemon;
let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };

before(async () => {
  if (skip) return;
  for (const h of Object.values(HOSTS)) { removeTestHost(h); servers.push(makeTestHost(h, PORT)); }
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  opts = { apiKey: 'e2b_0', apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/sbx` };
  for (const h of Object.values(HOSTS)) {
    await eventually(() => { try { sh('ip', ['netns', 'exec', h.ns, '/usr/bin/python3', '-c', `import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT}', timeout=2)`]); return true; } catch { return false; } }, 20_000, `the ${h.word} server`);
  }
});

after(async () => {
  if (skip) return;
  const file = `${d.runDir}.openapi-mismatches`;
  if (existsSync(file)) writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => l && !/^[A-Z]+ \/e2b\//.test(l)).map((l) => `${l}\n`).join(''));
  await d.stop();
  for (const s of servers) s.kill('SIGKILL');
  for (const h of Object.values(HOSTS)) removeTestHost(h);
});

/** What a GET of each test host gives in the sandbox: its word, or the exception's class name. */
async function reach(o: Partial<SandboxOpts>): Promise<{ ok: string; no: string; devices: string }> {
  const sbx = await Sandbox.create({ ...opts, ...o });
  try {
    const get = async (addr: string) => (await sbx.commands.run(`python3 -c '
import urllib.request
try:
    print(urllib.request.urlopen("http://${addr}:${PORT}/", timeout=8).read().decode())
except Exception as e:
    print(type(getattr(e, "reason", e)).__name__)
'`)).stdout.trim();
    return { ok: await get(HOSTS.ok.peer), no: await get(HOSTS.no.peer), devices: (await sbx.commands.run('ls /sys/class/net')).stdout.split(/\s+/).filter(Boolean).sort().join(' ') };
  } finally {
    await sbx.kill();
  }
}

test('allowOut with denyOut ALL_TRAFFIC reaches exactly the listed host', { skip, timeout: 300_000 }, async () => {
  const r = await reach({ network: { allowOut: [HOSTS.ok.peer], denyOut: [ALL_TRAFFIC] } });
  assert.equal(r.ok, 'allowed-host');
  assert.equal(r.no, 'ConnectionRefusedError');
});

test('allowInternetAccess true reaches every public address; no option: no network device', { skip, timeout: 300_000 }, async () => {
  const r = await reach({ allowInternetAccess: true });
  assert.deepEqual([r.ok, r.no], ['allowed-host', 'denied-host']);
  const none = await reach({});
  assert.equal(none.devices, 'lo', 'emberd\'s default: no network device');
  assert.notEqual(none.ok, 'allowed-host');
});
