// Egress on the Firecracker backend (docs/network.md "How QEMU gets the tap"), against the
// Firecracker API test double: without the jailer (a daemon over HTTP, Firecracker wrapped in
// nsenter) and with the stand-in jailer (the backend with an Egress of its own, `--netns`). What
// this shows: the VMM's process tree runs in the sandbox's netns (its /proc/PID/ns/net is the
// /run/netns handle), the tap is there owned by the VMM's uid, PUT /network-interfaces/eth0 came
// before InstanceStart and every request is spec-valid, the double accepted the tap only because
// it is in its own netns, and the guest's DNS goes over that tap to the daemon's resolver (the
// double hands the tap to QEMU's virtio-net: the guest is QEMU's, not Firecracker's); teardown
// leaves no netns, tap, process or file. Not shown: Firecracker's own virtio-net, the real
// jailer's setns/mknod, KVM. Needs root, iproute2, nftables, nsenter: skipped, saying why, otherwise.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { Socket } from 'node:dgram';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { isLive, liveProcessesWith } from './helpers/procs.ts';
import { testBootSpec, TEST_BOOT_DEADLINE_MS } from './helpers/boot-spec.ts';
import { FIRECRACKER_DOUBLE, FAKE_JAILER } from './firecracker-double/path.ts';
import { egressNames } from '../src/sandbox/egress/layout.ts';
import { egressUnavailable } from '../src/sandbox/egress/host-net.ts';
import { Egress } from '../src/sandbox/egress/egress.ts';
import { testDnsServer } from './helpers/test-hosts.ts';
import { NSENTER } from '../src/vmm/netns.ts';
import { FirecrackerBackend } from '../src/vmm/firecracker/firecracker-backend.ts';
import { FirecrackerApiSpec, SPEC_VERSIONS } from '../src/vmm/firecracker/api-spec.ts';
import { jailIdFor } from '../src/vmm/firecracker/jailer.ts';
import { AgentClient } from '../src/agent/client.ts';
import { createLogger } from '../src/log.ts';

const skip = egressUnavailable() ?? (NSENTER ? undefined : 'nsenter (util-linux) is not installed');
if (skip) console.log(`# e2e-firecracker-egress skipped: ${skip}`);

const work = mkdtempSync(join(tmpdir(), 'emb-fcnet-'));
const DNS_NAMES: Record<string, string> = { 'named.test': '203.0.113.66' };
let dns: Socket;
let dnsAsked: string[] = [];

before(async () => {
  if (skip) return;
  ({ socket: dns, asked: dnsAsked } = await testDnsServer(DNS_NAMES));
});
after(() => {
  dns?.close();
  rmSync(work, { recursive: true, force: true });
});

type Rec = { pid: number; method: string; path: string; body?: any; status: number };
const records = (file: string): Rec[] => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const netnsIno = (ns: string) => statSync(`/run/netns/${ns}`).ino;
const pidNetIno = (pid: number) => statSync(`/proc/${pid}/ns/net`).ino;
const userName = (uid: number) => execFileSync('id', ['-nu', String(uid)], { encoding: 'utf8' }).trim();

/** The tap in the netns, as iproute2 describes it. */
function tapIn(ns: string): { kind?: string; type?: string; user?: string } {
  const [l] = JSON.parse(execFileSync('ip', ['-n', ns, '-d', '-j', 'link', 'show', 'dev', 'tap0'], { encoding: 'utf8' })) as { linkinfo?: { info_kind?: string; info_data?: { type?: string; user?: string } } }[];
  return { kind: l?.linkinfo?.info_kind, type: l?.linkinfo?.info_data?.type, user: l?.linkinfo?.info_data?.user };
}

/** The double's requests for one VM: a network interface before InstanceStart, all valid in both specs. */
function checkRequests(reqs: Rec[]): void {
  const order = reqs.map((r) => `${r.method} ${r.path} ${r.status}`);
  const nic = order.indexOf('PUT /network-interfaces/eth0 204');
  const start = reqs.findIndex((r) => r.path === '/actions' && r.body?.action_type === 'InstanceStart' && r.status === 204);
  assert.ok(nic >= 0 && start > nic, `PUT /network-interfaces/eth0 before InstanceStart: ${order.join(', ')}`);
  assert.deepEqual(reqs[nic]!.body, { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '02:eb:00:00:00:02' });
  for (const v of SPEC_VERSIONS) for (const r of reqs) assert.ok(FirecrackerApiSpec.load(v, 'firecracker').validateRequest(r).ok, `${v} ${r.method} ${r.path}`);
}

const GUEST_DNS = `
import os, socket
print(sorted(os.listdir('/sys/class/net')))
print(socket.gethostbyname('named.test'))
try:
    socket.gethostbyname('denied.test')
    print('resolved')
except socket.gaierror:
    print('gaierror')
`;

test('without the jailer: a daemon boots a sandbox with network inside its netns (nsenter), DNS over the tap', { skip, timeout: 180_000 }, async () => {
  const record = join(work, 'plain.jsonl');
  let d: TestDaemon;
  process.env.FC_DOUBLE_RECORD = record;
  try {
    d = await startDaemon(['--backend', 'firecracker', '--firecracker', FIRECRACKER_DOUBLE, '--jailer', 'off', '--pool-size', '0', '--snapshots', 'off', '--egress-dns', `127.0.0.1:${dns.address().port}`]);
  } finally {
    delete process.env.FC_DOUBLE_RECORD;
  }
  const call = (method: string, path: string, body?: unknown) => http(d, method, path, body === undefined ? undefined : JSON.stringify(body), { 'content-type': 'application/json' });
  const names = egressNames(d.runDir);
  const mine = () => (existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(names.netnsPrefix)) : []);
  try {
    const c = await call('POST', '/sandboxes', { network: { allow: ['named.test'] } });
    assert.equal(c.status, 201, c.text);
    const id: string = c.json.id;
    assert.equal(c.json.boot_mode, 'cold');
    const [ns] = mine();
    assert.equal(ns, `${names.netnsPrefix}${id}`);
    const pid: number = (await call('GET', `/sandboxes/${id}`)).json.vmm_pid;
    // The double (Firecracker's pid: nsenter exec'd it) and its QEMU are in the sandbox's netns.
    const tree = liveProcessesWith(id.replace('_', '-'));
    assert.ok(tree.includes(pid) && tree.length >= 2, `double and QEMU: ${tree}`);
    for (const p of tree) assert.equal(pidNetIno(p), netnsIno(ns!), `pid ${p} is in ${ns}`);
    assert.notEqual(pidNetIno(process.pid), netnsIno(ns!));
    // No jailer: Firecracker runs as emberd's uid, so the tap is made owned by it.
    assert.deepEqual(tapIn(ns!), { kind: 'tun', type: 'tap', user: userName(process.getuid!()) });

    const e = await call('POST', `/sandboxes/${id}/exec`, { code: GUEST_DNS, timeout_ms: 30_000 });
    assert.equal(e.status, 200, e.text);
    assert.equal(e.json.stdout, "['eth0', 'lo']\n203.0.113.66\ngaierror\n", e.json.stderr);
    assert.ok(dnsAsked.includes('named.test') && !dnsAsked.includes('denied.test'));
    const v = (await call('GET', `/sandboxes/${id}`)).json.network;
    assert.ok(v.dns_answered >= 1 && v.dns_refused >= 1, JSON.stringify(v));

    checkRequests(records(record).filter((r) => r.pid === pid));
    assert.equal((await call('DELETE', `/sandboxes/${id}`)).status, 204);
    await eventually(() => !isLive(pid) && liveProcessesWith(id.replace('_', '-')).length === 0, 30_000, 'no double or QEMU left');
    await eventually(() => mine().length === 0, 30_000, 'the netns (and its tap) removed');
    await eventually(() => !existsSync(join(d.runDir, id)), 30_000, 'run dir removed');
  } finally {
    assert.equal(await d.stop(), 0, d.log());
  }
  assert.deepEqual(mine(), []);
});

test('with the (stand-in) jailer: --netns puts the jailed double in the sandbox netns; the tap is the jail uid\'s', { skip, timeout: 180_000 }, async () => {
  const runBase = join(work, 'run');
  const chrootBase = mkdtempSync('/tmp/fj-'); // short: the jail's socket paths must fit sun_path
  mkdirSync(runBase);
  const jailerRecord = join(work, 'jailer-argv.jsonl');
  const record = join(work, 'jailed.jsonl');
  process.env.FAKE_JAILER_RECORD = jailerRecord;
  process.env.FC_DOUBLE_RECORD = record;
  const backend = new FirecrackerBackend({ binary: FIRECRACKER_DOUBLE, jailer: { binary: FAKE_JAILER, uid: 65534, gid: 65534, chrootBase } });
  const egress = new Egress({ runBase, vmmUid: backend.vmmUser.uid, vmmGid: backend.vmmUser.gid, upstream: { host: '127.0.0.1', port: dns.address().port }, log: createLogger({ level: 'silent' }) });
  const id = 'sb_fcnetjailed000000000';
  const sb = await egress.open(id, { allow: ['named.test'] });
  let agent: AgentClient | undefined;
  try {
    const ns = sb.network.netns;
    const vm = await backend.boot(testBootSpec(id, join(runBase, id), { network: sb.network, kernelArgs: [sb.kernelArg] }));
    agent = new AgentClient(vm.control);
    await agent.helloUntil(Date.now() + TEST_BOOT_DEADLINE_MS);
    const argv = JSON.parse(readFileSync(jailerRecord, 'utf8').trim()) as string[];
    assert.deepEqual(argv.slice(argv.indexOf('--netns'), argv.indexOf('--netns') + 2), ['--netns', `/run/netns/${ns}`]);
    assert.ok(argv.indexOf('--netns') < argv.indexOf('--'), 'a jailer flag, not one for Firecracker');
    // The pid the jailer wrote is the double's, in the netns; so is its QEMU.
    const tree = liveProcessesWith(jailIdFor(id, runBase));
    assert.ok(tree.includes(vm.pid) && tree.length >= 2, `double and QEMU: ${tree}`);
    for (const p of tree) assert.equal(pidNetIno(p), netnsIno(ns), `pid ${p} is in ${ns}`);
    assert.deepEqual(tapIn(ns), { kind: 'tun', type: 'tap', user: userName(65534) });

    const r = await agent.run({ argv: ['python3', '-c', GUEST_DNS], timeoutMs: 30_000 });
    assert.equal(r.stdout.toString(), "['eth0', 'lo']\n203.0.113.66\ngaierror\n", r.stderr.toString());
    assert.ok(sb.resolver.counters.answered >= 1 && sb.resolver.counters.refused >= 1);
    checkRequests(records(record).filter((x) => x.pid === vm.pid));

    agent.shutdown();
    await vm.stop(10_000);
    assert.ok(!isLive(vm.pid));
    await eventually(() => liveProcessesWith(jailIdFor(id, runBase)).length === 0, 30_000, 'no double or QEMU left');
    assert.equal(existsSync(join(chrootBase, 'firecracker-double', jailIdFor(id, runBase))), false, 'the jail is removed');
  } finally {
    agent?.close();
    delete process.env.FAKE_JAILER_RECORD;
    delete process.env.FC_DOUBLE_RECORD;
    await sb.close();
    await egress.close();
    rmSync(chrootBase, { recursive: true, force: true });
  }
  assert.equal(existsSync(`/run/netns/${sb.network.netns}`), false, 'the netns (and its tap) removed');
});
