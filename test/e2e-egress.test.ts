// Egress end to end (docs/network.md "Egress"), against addresses this test creates and nothing
// else: two network namespaces, each with a veth to the host and an HTTP server answering a known
// word: the "allowed" host (198.51.100.2, also 203.0.113.66 and the private 10.99.0.2 on the same
// veth) and the "denied" host (198.51.100.6), from the documentation ranges (skipped if the host
// uses them); and a DNS server on 127.0.0.1 (the daemon's --egress-dns) that knows named.test
// (203.0.113.66) and denied.test (198.51.100.6). A sandbox allowing 198.51.100.2 and named.test must reach exactly those, from
// python's urllib in the guest; the counters must move; a sandbox without `network` has no
// device; nothing of the plumbing may outlive a sandbox, and a daemon start removes what a
// SIGKILLed daemon left. Skipped, saying why, where root, netns or nft are missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:dgram';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { isLive, vmmsBelow } from './helpers/procs.ts';
import { parsePromText, valueOf } from './helpers/prom-text.ts';
import { egressNames } from '../src/sandbox/egress/layout.ts';
import { egressUnavailable } from '../src/sandbox/egress/host-net.ts';
import { makeTestHost, removeTestHost, testDnsServer, testNetsInUse } from './helpers/test-hosts.ts';


const tag = `${process.pid % 10000}`;
const HOSTS = {
  ok: { ns: `emtest-ok-${tag}`, veth: `etok${tag}`, host: '198.51.100.1', peer: '198.51.100.2', extra: ['203.0.113.66', '10.99.0.2'], word: 'allowed-host' },
  no: { ns: `emtest-no-${tag}`, veth: `etno${tag}`, host: '198.51.100.5', peer: '198.51.100.6', extra: [] as string[], word: 'denied-host' },
};
/** Every address the test puts on the host or its namespaces: none may already be in use here. */
const TEST_NETS = ['198.51.100.', '203.0.113.', '10.99.0.'];
const PORT = 8080;
const DNS_NAMES: Record<string, string> = { 'named.test': '203.0.113.66', 'denied.test': '198.51.100.6' };

const skip = egressUnavailable() ?? (existsSync('/usr/bin/python3') ? undefined : '/usr/bin/python3 is needed for the test servers') ?? testNetsInUse(TEST_NETS);
if (skip) console.log(`# e2e-egress skipped: ${skip}`);

let d: TestDaemon;
/** The host's own addresses besides loopback and the test's (each must be refused). */
let hostOwn: string[] = [];
let dns: Socket;
let dnsAsked: string[] = [];
const servers: ChildProcess[] = [];

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });
const call = (method: string, path: string, body?: unknown) => http(d, method, path, body === undefined ? undefined : JSON.stringify(body), { 'content-type': 'application/json' });

/** Runs python in the sandbox; its stdout. */
async function py(id: string, code: string): Promise<string> {
  const r = await call('POST', `/sandboxes/${id}/exec`, { code, timeout_ms: 30_000 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.exit_code, 0, `${r.json.stdout}\n${r.json.stderr}`);
  return r.json.stdout.trim();
}

/** One GET from the guest: the body, or the exception's class name. */
const fetchCode = (url: string) => `
import urllib.request
try:
    print(urllib.request.urlopen(${JSON.stringify(url)}, timeout=8).read().decode())
except Exception as e:
    r = getattr(e, 'reason', e)
    print(type(r).__name__)
`;

/** The daemon's sandbox netns and host veths (by its names' prefixes). */
function plumbingOf(runDir: string): string[] {
  const n = egressNames(runDir);
  const ns = existsSync('/run/netns') ? readdirSync('/run/netns').filter((x) => x.startsWith(n.netnsPrefix)) : [];
  return [...ns, ...readdirSync('/sys/class/net').filter((x) => x.startsWith(n.vethPrefix))];
}

before(async () => {
  if (skip) return;
  hostOwn = (JSON.parse(sh('ip', ['-j', '-4', 'addr'])) as { addr_info: { local: string }[] }[]).flatMap((l) => l.addr_info.map((a) => a.local)).filter((a) => !a.startsWith('127.') && !a.startsWith('10.231.'));
  for (const h of Object.values(HOSTS)) { removeTestHost(h); servers.push(makeTestHost(h, PORT)); }
  ({ socket: dns, asked: dnsAsked } = await testDnsServer(DNS_NAMES));
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off', '--egress-dns', `127.0.0.1:${dns.address().port}`]);
  // both servers answer before any sandbox relies on them
  for (const h of Object.values(HOSTS)) {
    await eventually(() => { try { sh('ip', ['netns', 'exec', h.ns, '/usr/bin/python3', '-c', `import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT}', timeout=2)`]); return true; } catch { return false; } }, 20_000, `the ${h.word} server`);
  }
});

after(async () => {
  if (skip) return;
  const pid = d.proc.pid!;
  const runDir = d.runDir;
  assert.equal(await d.stop(), 0, d.log());
  assert.deepEqual(vmmsBelow(pid), []);
  assert.deepEqual(plumbingOf(runDir), [], 'no netns or veth of the daemon after it stopped');
  for (const s of servers) s.kill('SIGKILL');
  for (const h of Object.values(HOSTS)) removeTestHost(h);
  dns.close();
});

test('a sandbox created without network has no network device', { skip }, async () => {
  const c = await call('POST', '/sandboxes', {});
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  try {
    assert.equal((await call('GET', `/sandboxes/${id}`)).json.network, null);
    assert.equal(await py(id, 'import os; print(sorted(os.listdir("/sys/class/net")))'), "['lo']");
    assert.deepEqual(plumbingOf(d.runDir), [], 'no netns or veth for it');
  } finally {
    await call('DELETE', `/sandboxes/${id}`);
  }
});

test('a sandbox with a network pauses (holding no netns), resumes and forks with its allowlist, each fork on a network of its own (regression: the new tap of a fork had a MAC its ARP cache did not know)', { skip }, async () => {
  const c = await call('POST', '/sandboxes', { network: { allow: [`${HOSTS.ok.peer}/32`] } });
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  const ids = [id];
  try {
    await py(id, 'open("/root/state.txt", "w").write("kept")');
    const paused = await call('POST', `/sandboxes/${id}/pause`);
    assert.equal(paused.status, 200, paused.text);
    assert.deepEqual(plumbingOf(d.runDir).filter((x) => x.includes(id)), [], 'a paused sandbox holds no netns');
    const resumed = await call('POST', `/sandboxes/${id}/resume`);
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(await py(id, 'print(open("/root/state.txt").read())'), 'kept');
    assert.equal(await py(id, fetchCode(`http://${HOSTS.ok.peer}:${PORT}/`)), 'allowed-host', 'the allowed host answers after the resume');
    assert.equal(await py(id, fetchCode(`http://${HOSTS.no.peer}:${PORT}/`)), 'ConnectionRefusedError', 'and the rest is still refused');
    assert.deepEqual((await call('GET', `/sandboxes/${id}`)).json.network.allow, [`${HOSTS.ok.peer}/32`]);

    const f = await call('POST', `/sandboxes/${id}/fork`, { count: 1 });
    assert.equal(f.status, 201, f.text);
    const fork = f.json.sandboxes[0].id as string;
    ids.push(fork);
    assert.equal(await py(fork, 'print(open("/root/state.txt").read())'), 'kept');
    assert.equal(await py(fork, fetchCode(`http://${HOSTS.ok.peer}:${PORT}/`)), 'allowed-host', 'the fork reaches the allowed host');
    assert.equal(await py(fork, fetchCode(`http://${HOSTS.no.peer}:${PORT}/`)), 'ConnectionRefusedError');
    assert.equal(await py(id, fetchCode(`http://${HOSTS.ok.peer}:${PORT}/`)), 'allowed-host', 'the parent still does');
    const nets = plumbingOf(d.runDir);
    assert.ok(nets.some((x) => x.includes(id)) && nets.some((x) => x.includes(fork)), `a netns each: ${nets.join(' ')}`);
  } finally {
    for (const x of ids) await call('DELETE', `/sandboxes/${x}`);
  }
  await eventually(() => plumbingOf(d.runDir).length === 0, 20_000, 'no plumbing left after the deletes');
});

test('bad network requests are 400 with a code and a hint', { skip }, async () => {
  for (const allow of [['198.51.100.0/33'], ['198.51.100.1/24'], ['2001:db8::1'], ['bad name!']]) {
    const r = await call('POST', '/sandboxes', { network: { allow } });
    assert.equal(r.status, 400, `${allow}: ${r.text}`);
    assert.equal(r.json.error.code, 'INVALID_REQUEST');
    assert.match(r.json.error.message, /network\.allow/);
  }
  const r = await call('POST', '/sandboxes', { network: { allow: [], extra: 1 } });
  assert.equal(r.status, 400, r.text);
  assert.deepEqual(plumbingOf(d.runDir), [], 'a refused create leaves no plumbing');
});

test('egress reaches only the allowlist; DNS answers only allowed names; counters move', { skip }, async () => {
  const c = await call('POST', '/sandboxes', { network: { allow: [`${HOSTS.ok.peer}/32`, 'named.test'], rate_mbit: 50 } });
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  try {
    assert.equal(c.json.boot_mode, 'cold');
    const [ns] = plumbingOf(d.runDir).filter((x) => x.includes(id));
    assert.ok(ns, 'the sandbox has its netns');

    assert.equal(await py(id, fetchCode(`http://${HOSTS.ok.peer}:${PORT}/`)), 'allowed-host', 'a listed address answers');
    assert.equal(await py(id, fetchCode(`http://${HOSTS.no.peer}:${PORT}/`)), 'ConnectionRefusedError', 'an unlisted address is refused');
    assert.equal(await py(id, fetchCode(`http://10.99.0.2:${PORT}/`)), 'ConnectionRefusedError', 'a private address is refused, even on an allowed host');
    assert.equal(await py(id, fetchCode(`http://${HOSTS.ok.host}:${PORT}/`)), 'ConnectionRefusedError', "the host's own address is refused");
    assert.equal(await py(id, fetchCode('http://169.254.169.254/')), 'ConnectionRefusedError', 'the metadata address is refused');
    for (const a of hostOwn) assert.equal(await py(id, fetchCode(`http://${a}:${PORT}/`)), 'ConnectionRefusedError', `the host's address ${a} is refused`);
    assert.equal(await py(id, fetchCode(`http://203.0.113.66:${PORT}/`)), 'ConnectionRefusedError', 'a named host is refused before its name was resolved');

    assert.equal(await py(id, 'import socket; print(socket.gethostbyname("named.test"))'), '203.0.113.66');
    assert.equal(await py(id, fetchCode(`http://named.test:${PORT}/`)), 'allowed-host', 'an allowed name answers once resolved');
    assert.equal(await py(id, 'import socket\ntry:\n    print(socket.gethostbyname("denied.test"))\nexcept socket.gaierror:\n    print("gaierror")'), 'gaierror');
    assert.ok(!dnsAsked.includes('denied.test'), 'a name not in the allowlist never reaches the upstream');
    assert.equal(await py(id, fetchCode(`http://${HOSTS.no.peer}:${PORT}/`)), 'ConnectionRefusedError', 'still refused');

    const v = (await call('GET', `/sandboxes/${id}`)).json.network;
    assert.deepEqual(v.allow, [`${HOSTS.ok.peer}/32`, 'named.test']);
    assert.equal(v.rate_mbit, 50);
    assert.ok(v.bytes_out > 0 && v.bytes_in > 0, JSON.stringify(v));
    assert.ok(v.refused_connections >= 6 + hostOwn.length, JSON.stringify(v));
    assert.ok(v.dns_answered >= 1 && v.dns_refused >= 1, JSON.stringify(v));
    const tcOut = sh('ip', ['netns', 'exec', ns!, 'tc', 'qdisc', 'show', 'dev', 'veth0']);
    assert.match(tcOut, /tbf .*rate 50Mbit/, tcOut);

    const m = parsePromText((await call('GET', '/metrics')).text);
    assert.ok(valueOf(m, 'emberd_egress_refused_connections_total', {})! >= 6);
    assert.ok(valueOf(m, 'emberd_egress_bytes_total', { direction: 'out' })! > 0);
  } finally {
    await call('DELETE', `/sandboxes/${id}`);
  }
  await eventually(() => plumbingOf(d.runDir).length === 0, 20_000, 'the sandbox netns and veth removed after DELETE');
  const m = parsePromText((await call('GET', '/metrics')).text);
  assert.ok(valueOf(m, 'emberd_egress_refused_connections_total', {})! >= 6, 'a gone sandbox still counts');
});

test('a paused sandbox with a network is resumed by the next daemon with its allowlist', { skip }, async () => {
  const stateDir = mkdtempSync('/tmp/emb-egstate-');
  const args = ['--pool-size', '0', '--snapshots', 'off', '--egress-dns', `127.0.0.1:${dns.address().port}`, '--state-dir', stateDir];
  const json = { 'content-type': 'application/json' };
  const first = await startDaemon(args);
  let id = '';
  try {
    const c = await http(first, 'POST', '/sandboxes', JSON.stringify({ network: { allow: [`${HOSTS.ok.peer}/32`] } }), json);
    assert.equal(c.status, 201, c.text);
    id = c.json.id;
    const p = await http(first, 'POST', `/sandboxes/${id}/pause`);
    assert.equal(p.status, 200, p.text);
  } finally {
    assert.equal(await first.stop(), 0, first.log());
  }
  const next = await startDaemon(args);
  try {
    assert.equal((await http(next, 'GET', `/sandboxes/${id}`)).json.state, 'paused');
    const run = async (url: string) => {
      const r = await http(next, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ code: fetchCode(url), timeout_ms: 30_000 }), json);
      assert.equal(r.status, 200, r.text);
      return String(r.json.stdout).trim();
    };
    assert.equal(await run(`http://${HOSTS.ok.peer}:${PORT}/`), 'allowed-host', 'resumed by the call, its network built again from the saved allowlist');
    assert.equal(await run(`http://${HOSTS.no.peer}:${PORT}/`), 'ConnectionRefusedError');
    assert.equal((await http(next, 'DELETE', `/sandboxes/${id}`)).status, 204);
    await eventually(() => plumbingOf(next.runDir).length === 0, 20_000, 'no plumbing left after the delete');
  } finally {
    assert.equal(await next.stop(), 0, next.log());
    rmSync(stateDir, { recursive: true, force: true });
  }
});

test('a daemon start removes the netns and veths a SIGKILLed daemon left', { skip }, async () => {
  const victim = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  try {
    const c = await http(victim, 'POST', '/sandboxes', JSON.stringify({ network: { allow: [] } }), { 'content-type': 'application/json' });
    assert.equal(c.status, 201, c.text);
    const vmm = (await http(victim, 'GET', `/sandboxes/${c.json.id}`)).json.vmm_pid;
    assert.ok(isLive(vmm));
    victim.proc.kill('SIGKILL');
    await eventually(() => !isLive(vmm), 10_000, 'its VMM gone with it (PDEATHSIG)');
    const left = plumbingOf(victim.runDir);
    assert.equal(left.length, 2, `its netns and veth remain: ${left}`);
    const next = await startDaemon(['--pool-size', '0', '--snapshots', 'off', '--run-dir', victim.runDir]);
    try {
      assert.deepEqual(plumbingOf(victim.runDir), []);
      assert.match(next.log(), /removed \d+ network namespaces/);
    } finally {
      assert.equal(await next.stop(), 0);
    }
  } finally {
    await victim.stop().catch(() => {});
  }
});
