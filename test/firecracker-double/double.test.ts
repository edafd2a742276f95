// The Firecracker API test double itself, driven over raw HTTP and raw hybrid vsock (not through
// emberd's driver): Firecracker's command-line behaviour, its API rules before and after
// InstanceStart, and the CONNECT/OK semantics. One guest boot.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { createConnection } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAKE_JAILER, FIRECRACKER_DOUBLE } from './path.ts';
import { egressUnavailable } from '../../src/sandbox/egress/host-net.ts';
import { NSENTER } from '../../src/vmm/netns.ts';
import { FirecrackerApiSpec } from '../../src/vmm/firecracker/api-spec.ts';
import { bootRequests } from '../../src/vmm/firecracker/boot-config.ts';
import { connectHybridVsock } from '../../src/agent/connect.ts';
import { AgentClient } from '../../src/agent/client.ts';
import { testBootSpec, TEST_BOOT_DEADLINE_MS } from '../helpers/boot-spec.ts';
import { liveProcessesWith } from '../helpers/procs.ts';
import { decodeVmState, encodeVmState, type DoubleVmState } from './snapshot-file.ts';

const work = mkdtempSync(join(tmpdir(), 'emb-fcd-'));
const started: ChildProcess[] = [];
// A failing case must not leave a double running (it would hold the test process open).
after(() => {
  for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

interface Double { proc: ChildProcess; sock: string; dir: string; exit: Promise<number | null>; out(): string }

/** `wrap`: commands exec'ing the double, e.g. nsenter into a netns. */
async function startDouble(name: string, extra: string[] = [], env: Record<string, string> = {}, wrap: string[] = []): Promise<Double> {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  const sock = join(dir, 'api.sock');
  const command = [...wrap, FIRECRACKER_DOUBLE, '--api-sock', sock, '--id', name, ...extra];
  // fd 3: the double's readiness fd (FC_DOUBLE_READY_FD), written once the API socket listens.
  const proc = spawn(command[0]!, command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, FC_DOUBLE_RECORD: join(dir, 'rec.jsonl'), FC_DOUBLE_READY_FD: '3', ...env },
  });
  let out = '';
  proc.stdout!.on('data', (b: Buffer) => { out += b; });
  proc.stderr!.on('data', (b: Buffer) => { out += b; });
  started.push(proc);
  const exit = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  await new Promise<void>((resolve, reject) => {
    let note = '';
    proc.stdio[3]!.on('data', (b: Buffer) => { note += b; if (note.includes('READY=1\n')) resolve(); });
    void exit.then((c) => reject(new Error(`double exited with ${c} before it listened: ${out}`)));
  });
  return { proc, sock, dir, exit, out: () => out };
}

function api(d: Double, method: string, path: string, body?: unknown, raw?: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const data = raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const req = request({ socketPath: d.sock, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode!, json: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** Sends `CONNECT <port>\n` and returns the first line, or 'EOF'. */
function vsockConnect(path: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ path }, () => s.write(`CONNECT ${port}\n`));
    let buf = '';
    s.on('data', (d) => { buf += d; if (buf.includes('\n')) { s.destroy(); resolve(buf.split('\n')[0]!); } });
    s.on('end', () => resolve(buf || 'EOF'));
    s.on('error', reject);
  });
}

const expect400 = async (d: Double, method: string, path: string, body: unknown, re: RegExp, raw?: string) => {
  const r = await api(d, method, path, body, raw);
  assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)}`);
  assert.deepEqual(Object.keys(r.json), ['fault_message']);
  assert.match(r.json.fault_message, re);
};

test('command line: --version, unknown flags (exit 153), a stale API socket (exit 1, not unlinked)', async () => {
  const v = spawnSync(FIRECRACKER_DOUBLE, ['--version'], { encoding: 'utf8' });
  assert.equal(v.status, 0);
  assert.match(v.stdout, /^Firecracker v1\.15\.1\n/);
  const bad = spawnSync(FIRECRACKER_DOUBLE, ['--api-sock', join(work, 'x.sock'), '--frobnicate'], { encoding: 'utf8' });
  assert.equal(bad.status, 153);
  assert.match(bad.stderr, /frobnicate/);
  assert.equal(spawnSync(FIRECRACKER_DOUBLE, ['--api-sock', join(work, 'y.sock'), '--id', 'under_score'], { encoding: 'utf8' }).status, 1);
  const stale = join(work, 'stale.sock');
  writeFileSync(stale, '');
  const s = spawnSync(FIRECRACKER_DOUBLE, ['--api-sock', stale], { encoding: 'utf8' });
  assert.equal(s.status, 1);
  assert.match(s.stderr, /Address in use/);
  assert.equal(existsSync(stale), true);
});

test('pre-boot API rules, errors as 400 {fault_message}, every request recorded', async () => {
  const d = await startDouble('preboot');
  try {
    assert.deepEqual((await api(d, 'GET', '/')).json, { app_name: 'Firecracker', id: 'preboot', state: 'Not started', vmm_version: '1.15.1' });
    assert.deepEqual((await api(d, 'GET', '/version')).json, { firecracker_version: '1.15.1' });
    await expect400(d, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128, cpus: 2 }, /unknown field "cpus"/);
    await expect400(d, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: -5 }, /mem_size_mib: must be >= 0/);
    await expect400(d, 'PUT', '/machine-config', { vcpu_count: 3, mem_size_mib: 128, smt: true }, /vCPU number is invalid/);
    await expect400(d, 'PUT', '/machine-config', undefined, /deserializing/, '{"vcpu_count": 1,');
    await expect400(d, 'PUT', '/boot-source', { kernel_image_path: join(d.dir, 'nope') }, /kernel file cannot be opened/);
    await expect400(d, 'PUT', '/drives/a', { drive_id: 'b', is_root_device: false, path_on_host: '/etc/hostname', is_read_only: true }, /id from the path does not match/);
    assert.equal((await api(d, 'PUT', '/drives/root', { drive_id: 'root', is_root_device: true, path_on_host: '/etc/hostname', is_read_only: true })).status, 204);
    await expect400(d, 'PUT', '/drives/root2', { drive_id: 'root2', is_root_device: true, path_on_host: '/etc/hostname', is_read_only: true }, /root block device already exists/);
    await expect400(d, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' }, /not supported before starting/);
    await expect400(d, 'PUT', '/actions', { action_type: 'InstanceStart' }, /without kernel configuration/);
    // No such tap in the double's netns (the host's): Firecracker's TUNSETIFF error shape.
    await expect400(d, 'PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'emtapnone' }, /^Could not create the network device: Open tap device failed: Error while creating ifreq structure: .*Invalid TUN\/TAP Backend provided by emtapnone\./);
    await expect400(d, 'DELETE', '/machine-config', undefined, /Invalid request method and\/or path: DELETE \/machine-config\./);
    await expect400(d, 'PUT', '/boot-source', { kernel_image_path: '/x'.repeat(30_000) }, /larger than the limit/);
    writeFileSync(join(d.dir, 'taken.vsock'), '');
    await expect400(d, 'PUT', '/vsock', { guest_cid: 3, uds_path: join(d.dir, 'taken.vsock') }, /Address in use/);
    assert.equal((await api(d, 'PUT', '/vsock', { guest_cid: 3, uds_path: join(d.dir, 'v.sock') })).status, 204);
    assert.equal(await vsockConnect(join(d.dir, 'v.sock'), 1024), 'EOF', 'no guest yet: Firecracker closes the connection');
    writeFileSync(join(d.dir, 'log'), '');
    assert.equal((await api(d, 'PUT', '/logger', { log_path: join(d.dir, 'log'), level: 'Info' })).status, 204);
    await expect400(d, 'PUT', '/logger', { log_path: join(d.dir, 'log') }, /only be configured once/);
    const rec = readFileSync(join(d.dir, 'rec.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(rec.length, 19);
    assert.equal(rec[2].status, 400);
    assert.deepEqual(rec[2].body, { vcpu_count: 1, mem_size_mib: 128, cpus: 2 });
  } finally {
    d.proc.kill('SIGKILL');
    await d.exit;
  }
});

test('boot under QEMU: post-boot rules, CONNECT/OK to the guest agent, SendCtrlAltDel ends it all', { timeout: 120_000 }, async () => {
  const d = await startDouble('boot');
  const vsock = join(d.dir, 'v.sock');
  let agent: AgentClient | undefined;
  try {
    const spec = testBootSpec('boot', d.dir, { pack: 'shell' });
    const reqs = bootRequests(spec, { kernel: spec.kernel, initramfs: spec.initramfs, pack: spec.packImage, vsockUds: vsock });
    for (const r of reqs) assert.equal((await api(d, r.method, r.path, r.body)).status, 204, r.path);
    assert.equal((await api(d, 'PUT', '/actions', { action_type: 'InstanceStart' })).status, 204);
    assert.equal((await api(d, 'GET', '/')).json.state, 'Running');
    await expect400(d, 'PUT', '/actions', { action_type: 'InstanceStart' }, /not supported after starting/);
    await expect400(d, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 256 }, /not supported after starting/);
    await expect400(d, 'PUT', '/drives/x', { drive_id: 'x', is_root_device: false, path_on_host: '/etc/hostname', is_read_only: true }, /not supported after starting/);
    assert.equal(await vsockConnect(vsock, 9999), 'EOF', 'nothing listens on port 9999');
    const control = await connectHybridVsock(vsock, 1024, spec.deadline);
    agent = new AgentClient(control);
    control.resume(); // connectHybridVsock hands the socket back paused

    const ack = await agent.helloUntil(Date.now() + TEST_BOOT_DEADLINE_MS);
    assert.equal(ack.transport, 'virtio-serial', 'the double bridges to the virtio-serial port');
    const r = await agent.run({ argv: ['sh', '-c', 'echo $((6*7)); ls /sys/bus/platform/drivers/virtio-mmio | grep -c LNRO0005'], timeoutMs: 20_000 });
    assert.equal(r.stdout.toString().split('\n')[0], '42');
    assert.equal(r.stdout.toString().trim().split('\n').at(-1), '2', 'pack disk and virtio-serial bound through ACPI (LNRO0005) by the virtio_mmio module');
    assert.equal((await api(d, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' })).status, 204);
    assert.equal(await d.exit, 0, d.out());
    await agent.closed;
    // Like Firecracker, the double leaves its sockets for the caller to remove.
    assert.deepEqual(readdirSync(d.dir).sort(), ['api.sock', 'rec.jsonl', 'v.sock']);
    assert.match(d.out(), /emberd-init/, 'the serial console went to stdout');
    assert.deepEqual(liveProcessesWith('emberd-boot\0'), [], 'no QEMU left behind');
    const api15 = FirecrackerApiSpec.load('1.15.1', 'firecracker');
    for (const x of readFileSync(join(d.dir, 'rec.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))) assert.ok(api15.validateRequest(x).ok, x.path);
  } finally {
    agent?.close();
    d.proc.kill('SIGKILL');
    await d.exit;
  }
});

// Needs root, iproute2 and nsenter: a netns of this test's own with a tap, a tun and lo in it.
const netSkip = egressUnavailable() ?? (NSENTER ? undefined : 'nsenter (util-linux) is not installed');
test('network interfaces: host_dev_name must be a single-queue tap in the double\'s own netns, else Firecracker\'s 400', { skip: netSkip }, async () => {
  const ns = `emtest-fcd-${process.pid % 100000}`;
  const sh = (...a: string[]) => execFileSync('ip', a, { stdio: 'ignore' });
  try { sh('netns', 'del', ns); } catch { /* none left */ }
  sh('netns', 'add', ns);
  try {
    sh('-n', ns, 'tuntap', 'add', 'dev', 'fctap0', 'mode', 'tap');
    sh('-n', ns, 'tuntap', 'add', 'dev', 'fctun0', 'mode', 'tun');
    sh('-n', ns, 'tuntap', 'add', 'dev', 'fcmq0', 'mode', 'tap', 'multi_queue');
    const nic = (tap: string, over: Record<string, unknown> = {}) => ({ iface_id: 'eth0', host_dev_name: tap, guest_mac: '02:eb:00:00:00:02', ...over });
    // Outside the netns the tap does not exist for the double, whatever the host has.
    const outside = await startDouble('net-outside');
    try {
      await expect400(outside, 'PUT', '/network-interfaces/eth0', nic('fctap0'), /Operation not permitted \(os error 1\)\. Invalid TUN\/TAP Backend provided by fctap0\..*no interface fctap0 in this process's network namespace/);
    } finally { outside.proc.kill('SIGKILL'); }

    const d = await startDouble('net-inside', [], {}, [NSENTER!, `--net=/run/netns/${ns}`, '--']);
    try {
      assert.equal(statSync(`/proc/${d.proc.pid}/ns/net`).ino, statSync(`/run/netns/${ns}`).ino, 'the double runs in the test netns');
      await expect400(d, 'PUT', '/network-interfaces/eth0', { iface_id: 'eth0' }, /deserializing.*host_dev_name/);
      await expect400(d, 'PUT', '/network-interfaces/eth0', nic('fctap0', { mtu: 1500 }), /unknown field "mtu"/); // 1.16 only
      await expect400(d, 'PUT', '/network-interfaces/eth1', nic('fctap0'), /id from the path does not match/);
      await expect400(d, 'PUT', '/network-interfaces/eth0', nic('lo'), /Invalid argument \(os error 22\)\. Invalid TUN\/TAP Backend provided by lo\..*not a single-queue tap/);
      await expect400(d, 'PUT', '/network-interfaces/eth0', nic('fctun0'), /os error 22.*a tun/);
      await expect400(d, 'PUT', '/network-interfaces/eth0', nic('fcmq0'), /os error 22.*multi_queue/);
      await expect400(d, 'PUT', '/network-interfaces/eth0', nic('nosuchtap'), /os error 1\)\. Invalid TUN\/TAP Backend provided by nosuchtap/);
      await expect400(d, 'PUT', '/network-interfaces/eth0', nic('a-name-of-16-chr'), /Invalid interface name/);
      await expect400(d, 'PUT', '/network-interfaces/eth0', nic('fctap0', { rx_rate_limiter: { bandwidth: { size: 1000, refill_time: 100 } } }), /rx_rate_limiter is not supported by the emberd Firecracker test double/);
      assert.equal((await api(d, 'PUT', '/network-interfaces/eth0', nic('fctap0'))).status, 204);
      // The same iface again replaces it, as Firecracker does; another one on the same tap is refused.
      assert.equal((await api(d, 'PUT', '/network-interfaces/eth0', nic('fctap0'))).status, 204);
      await expect400(d, 'PUT', '/network-interfaces/eth1', nic('fctap0', { iface_id: 'eth1', guest_mac: '02:eb:00:00:00:03' }), /Device or resource busy/);
      await expect400(d, 'PUT', '/network-interfaces/eth1', nic('fctap0', { iface_id: 'eth1' }), /MAC address is already in use/);
      const rec = readFileSync(join(d.dir, 'rec.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      for (const r of rec) assert.deepEqual(Object.keys(r).includes('status'), true);
      assert.deepEqual(rec.filter((r) => r.status === 204).length, 2);
    } finally { d.proc.kill('SIGKILL'); }
    // The stand-in jailer refuses a --netns that is not a namespace handle, as the jailer's open/setns does, before any jail exists.
    const jargs = (netns: string) => ['--id', 'j1', '--exec-file', FIRECRACKER_DOUBLE, '--uid', '0', '--gid', '0', '--chroot-base-dir', join(work, 'jails'), '--netns', netns, '--new-pid-ns', '--', '--api-sock', '/run/firecracker.socket'];
    const missing = spawnSync(FAKE_JAILER, jargs(join(work, 'no-such-netns')), { encoding: 'utf8' });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /Failed to open file .*no-such-netns/);
    const notNs = spawnSync(FAKE_JAILER, jargs('/etc/hostname'), { encoding: 'utf8' });
    assert.equal(notNs.status, 1);
    assert.match(notNs.stderr, /Failed to join network namespace/);
    assert.equal(existsSync(join(work, 'jails')), false);
  } finally {
    try { sh('netns', 'del', ns); } catch { /* already gone */ }
  }
});

test('--snapshot-version prints the snapshot data format of the version the double reports', () => {
  assert.equal(spawnSync(FIRECRACKER_DOUBLE, ['--snapshot-version'], { encoding: 'utf8' }).stdout, 'v9.0.0\n');
  assert.equal(spawnSync(FIRECRACKER_DOUBLE, ['--snapshot-version'], { encoding: 'utf8', env: { ...process.env, FC_DOUBLE_VERSION: '1.16.1' } }).stdout, 'v10.0.0\n');
});

test('the state file: Firecracker\'s framing and load checks (magic, format version, checksum)', () => {
  const st: DoubleVmState = { version: '9.0.0', firecracker_version: '1.15.1', machine: { vcpu_count: 1 }, boot: { kernel_image_path: '/k' }, drives: [], memory: { encoding: 'qemu-migration+zstd' } };
  const buf = encodeVmState(st);
  assert.equal(buf.readBigUInt64LE(0), 0x0710_1984_8664_0000n, 'Firecracker\'s x86_64 snapshot magic');
  assert.deepEqual(decodeVmState(buf, '9.0.0'), st);
  assert.deepEqual(decodeVmState(encodeVmState({ ...st, version: '9.0.0' }), '9.1.0').version, '9.0.0', 'an older minor of the same major loads');
  assert.throws(() => decodeVmState(buf, '10.0.0'), /Invalid data version: 9\.0\.0/);
  assert.throws(() => decodeVmState(encodeVmState({ ...st, version: '9.2.0' }), '9.1.0'), /Invalid data version: 9\.2\.0/);
  assert.throws(() => decodeVmState(Buffer.from('not a snapshot at all'), '9.0.0'), /Magic value does not match arch: \d+/);
  assert.throws(() => decodeVmState(Buffer.from('not a snapshot'), '9.0.0'), /bitcode serialization: EOF/);
  const flipped = Buffer.from(buf);
  flipped[flipped.length - 1]! ^= 1;
  assert.throws(() => decodeVmState(flipped, '9.0.0'), /CRC64 validation failed/);
  assert.throws(() => decodeVmState(Buffer.alloc(3), '9.0.0'), /too short/);
});

test('snapshot API rules without a VM: pause/create only after boot, load only on a fresh process, a failed load ends it', async () => {
  const d = await startDouble('snaprules');
  const load = (extra: object) => ({ snapshot_path: join(d.dir, 'vmstate'), ...extra });
  try {
    await expect400(d, 'PATCH', '/vm', { state: 'Paused' }, /not supported before starting/);
    await expect400(d, 'PUT', '/snapshot/create', { snapshot_type: 'Full', snapshot_path: join(d.dir, 's'), mem_file_path: join(d.dir, 'm') }, /not supported before starting/);
    // What the swagger cannot express, Firecracker's request parser refuses (the process lives on).
    await expect400(d, 'PUT', '/snapshot/load', load({ mem_file_path: 'm', mem_backend: { backend_type: 'File', backend_path: 'm' } }), /too many fields: either `mem_backend` or `mem_file_path` exclusively/);
    await expect400(d, 'PUT', '/snapshot/load', load({}), /missing field: either `mem_backend` or `mem_file_path` is required/);
    await expect400(d, 'PUT', '/snapshot/load', load({ mem_file_path: 'm', vsock_override: { uds_path: 'v' } }), /unknown field "vsock_override"/);
    assert.equal((await api(d, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128 })).status, 204);
    await expect400(d, 'PUT', '/snapshot/load', load({ mem_file_path: 'm' }), /not allowed after configuring boot-specific resources/);
    assert.equal((await api(d, 'GET', '/')).json.state, 'Not started', 'a refused request does not end the process');
  } finally {
    d.proc.kill('SIGKILL');
    await d.exit;
  }

  // The logger may come first; a load that fails once it has begun is answered, then the process exits 1.
  const e = await startDouble('snapfatal');
  writeFileSync(join(e.dir, 'log'), '');
  assert.equal((await api(e, 'PUT', '/logger', { log_path: join(e.dir, 'log') })).status, 204);
  await expect400(e, 'PUT', '/snapshot/load', { snapshot_path: join(e.dir, 'missing'), mem_backend: { backend_type: 'File', backend_path: join(e.dir, 'mem') } }, /Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: .*ENOENT/);
  assert.equal(await e.exit, 1, e.out());

  // A state file of another format version (here 1.16's, loaded by 1.15) is refused the same way.
  const f = await startDouble('snapversion');
  writeFileSync(join(f.dir, 'vmstate'), encodeVmState({ version: '10.0.0', firecracker_version: '1.16.1', machine: {}, boot: { kernel_image_path: '/k' }, drives: [], memory: { encoding: 'qemu-migration+zstd' } }));
  writeFileSync(join(f.dir, 'mem'), '');
  await expect400(f, 'PUT', '/snapshot/load', { snapshot_path: join(f.dir, 'vmstate'), mem_backend: { backend_type: 'File', backend_path: join(f.dir, 'mem') }, resume_vm: true }, /Failed to load snapshot state from file: Invalid data version: 10\.0\.0/);
  assert.equal(await f.exit, 1);
  for (const x of [d, e, f]) {
    for (const r of readFileSync(join(x.dir, 'rec.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))) {
      if (r.path.startsWith('/snapshot') && !/vsock_override|too many|missing field/.test(r.fault_message ?? '')) assert.ok(FirecrackerApiSpec.load('1.15.1', 'firecracker').validateRequest(r).ok, JSON.stringify(r));
    }
  }
});
