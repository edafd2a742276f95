// emberd's Firecracker API test double (test tree only; never a shipped backend).
//
// It stands in for `firecracker --api-sock PATH` on machines without KVM or a Firecracker binary:
//  - serves Firecracker's HTTP API on the Unix socket with node:http;
//  - validates every request body against the official swagger (src/vmm/firecracker/spec,
//    Firecracker strictness: unknown fields and negative integers rejected, as serde does);
//  - enforces Firecracker's rules: pre-boot-only resources, one InstanceStart, SendCtrlAltDel
//    only after it, drive id in path == body, files must open, vsock UDS bound at PUT /vsock and
//    refused if it exists, the API socket refused if it exists; errors are
//    `400 {"fault_message": "..."}`;
//  - on InstanceStart boots the configured kernel/initrd/drives under QEMU -M microvm (the qemu
//    backend's command line, src/vmm/qemu/cmdline.ts), console on this process's stdout;
//  - serves hybrid vsock on uds_path: `CONNECT <port>\n` -> `OK <n>\n` and a byte bridge to the
//    guest agent's virtio-serial port, or EOF while nothing listens (port not opened by the guest,
//    or another port), exactly as Firecracker answers when no guest listener exists;
//  - SendCtrlAltDel -> QMP quit; when QEMU exits (the guest rebooted) the double exits 0;
//  - snapshots: PATCH /vm Paused/Resumed -> QMP stop/cont; PUT /snapshot/create only while
//    paused -> QEMU's migration stream (zstd) at mem_file_path and a state file at snapshot_path
//    (./snapshot-file.ts); PUT /snapshot/load only on a fresh process with nothing but the
//    logger/metrics configured -> QEMU `-incoming` from mem_file_path, the vsock UDS bound at the
//    recorded path (or vsock_override, 1.16), resumed when resume_vm; a failed load answers 400
//    and ends the process (exit 1), as Firecracker does; `--snapshot-version` prints the format;
//  - network interfaces (pre-boot): host_dev_name must be a tap in the double's own network
//    namespace, as Firecracker's TUNSETIFF needs (so a double not started in the sandbox's netns
//    fails the PUT with Firecracker's error); the tap is handed to QEMU as the guest's virtio-net,
//    so guest traffic really goes through it;
//  - never unlinks its sockets (Firecracker doesn't either: the driver must);
//  - dies with its parent (spawned with PDEATHSIG by the driver) and QEMU dies with it (same).
// Deviations, on purpose: the guest sees virtio-serial instead of a virtio-vsock device (QEMU
// has no hybrid vsock and this host no vhost-vsock), and the kernel command line gets QEMU/TCG's
// timer words plus `reboot=t` (under QEMU microvm `reboot=k` takes ~1.5 s to fall through).
// Snapshot files differ in content (docs/firecracker.md): mem_file_path holds QEMU's whole
// migration stream, compressed (device state included), not raw guest memory; snapshot_path holds
// the VM's configuration; and a load needs the kernel and initrd at their recorded paths (QEMU
// rebuilds the machine from them before the incoming state replaces its memory), which Firecracker
// does not. The API is validated against the swagger of the version it reports (1.16.x: 1.16.1,
// else 1.15.1).
//
// Environment: FC_DOUBLE_RECORD=FILE appends one JSON line per API request
// ({method, path, body, status, fault_message}); FC_DOUBLE_VERSION overrides the version it
// reports (to test the driver's refusal); FC_DOUBLE_QEMU picks the QEMU binary;
// FC_DOUBLE_CHROOT=DIR resolves every path (API socket, files, UDS) under DIR, as a Firecracker
// chrooted by the jailer would see them (set by fake-jailer.ts); FC_DOUBLE_NO_PARENT_WATCH=1 keeps
// it alive when its parent exits (the jailer exits after starting Firecracker);
// FC_DOUBLE_READY_FD=N writes `READY=1\n` to fd N and closes it once the API socket listens (a
// readiness fd, as s6's notification-fd: tests that drive the double raw wait for it instead of
// polling the socket; Firecracker has no such signal, so the driver never uses it).
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, createConnection, type Server, type Socket } from 'node:net';
import { execFileSync } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, openSync, readFileSync, readSync, writeFileSync, writeSync, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { FirecrackerApiSpec } from '../../src/vmm/firecracker/api-spec.ts';
import { qemuArgs } from '../../src/vmm/qemu/cmdline.ts';
import { QmpClient } from '../../src/vmm/qemu/qmp.ts';
import { findQemu } from '../../src/vmm/qemu/qemu-backend.ts';
import { hostTscKhz, probeKvm } from '../../src/vmm/host.ts';
import { spawnVmm, type VmmProcess } from '../../src/vmm/vmm-process.ts';
import { connectUnix } from '../../src/agent/connect.ts';
import { parseFirecrackerVersion, SNAPSHOT_FORMAT_BY_MINOR } from '../../src/vmm/firecracker/version.ts';
import { DOUBLE_MARKER } from '../../src/vmm/firecracker/probe.ts';
import { IP } from '../../src/sandbox/egress/host-net.ts';
import { decodeVmState, encodeVmState, SnapshotFileError, type DoubleVmState } from './snapshot-file.ts';

const VERSION = process.env.FC_DOUBLE_VERSION ?? '1.15.1';
const PARSED_VERSION = parseFirecrackerVersion(VERSION);
/** The snapshot data format this "Firecracker" writes and loads (1.15: 9.0.0, 1.16: 10.0.0). */
const SNAPSHOT_FORMAT = SNAPSHOT_FORMAT_BY_MINOR[`${PARSED_VERSION?.major}.${PARSED_VERSION?.minor}`] ?? SNAPSHOT_FORMAT_BY_MINOR['1.15']!;
const DEFAULT_BOOT_ARGS = 'reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce';
const MAX_PAYLOAD = 51_200; // Firecracker's HTTP_MAX_PAYLOAD_SIZE
const FIRST_HOST_PORT = 1 << 30; // Firecracker numbers host-side vsock ports from 2^30
const AGENT_PORT = 1024;

// ---- command line (Firecracker's flags; anything else is exit 153, as Firecracker does) ----
interface Cli { apiSock: string; id: string }
function parseCli(argv: string[]): Cli {
  const withValue = new Set(['--api-sock', '--id', '--seccomp-filter', '--start-time-us', '--start-time-cpu-us', '--parent-cpu-time-us', '--log-path', '--level', '--module', '--metrics-path', '--http-api-max-payload-size', '--mmds-size-limit']);
  const flags = new Set(['--no-seccomp', '--show-level', '--show-log-origin', '--boot-timer', '--enable-pci', '--version', '--snapshot-version']);
  const cli: Cli = { apiSock: '/run/firecracker.socket', id: 'anonymous-instance' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--version') {
      process.stdout.write(`Firecracker v${VERSION}\n\n${DOUBLE_MARKER}: Firecracker API test double; guests run under QEMU -M microvm\n`);
      process.exit(0);
    }
    if (a === '--snapshot-version') {
      process.stdout.write(`v${SNAPSHOT_FORMAT}\n`);
      process.exit(0);
    }
    if (withValue.has(a)) {
      const v = argv[++i];
      if (v === undefined) argError(`Missing value for argument '${a.slice(2)}'.`);
      if (a === '--api-sock') cli.apiSock = v;
      if (a === '--id') cli.id = v;
    } else if (!flags.has(a)) {
      argError(a === '--config-file' || a === '--no-api' ? `${a} is not supported by the emberd Firecracker test double` : `Found argument '${a}' which wasn't expected, or isn't valid in this context.`);
    }
  }
  if (!/^[A-Za-z0-9-]{1,64}$/.test(cli.id)) { process.stderr.write(`Invalid instance ID: ${cli.id}\n`); process.exit(1); }
  return cli;
}
function argError(msg: string): never {
  process.stderr.write(`Arguments parsing error: ${msg}\n`);
  process.exit(153);
}

// ---- VM configuration, as Firecracker keeps it before InstanceStart ----
interface NetIf { iface_id: string; host_dev_name: string; guest_mac?: string }
interface Drive { drive_id: string; path_on_host?: string; is_root_device: boolean; is_read_only?: boolean; partuuid?: string }
const vmConfig = {
  machine: { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false } as Record<string, unknown>,
  boot: undefined as { kernel_image_path: string; initrd_path?: string; boot_args?: string } | undefined,
  drives: new Map<string, Drive>(),
  vsock: undefined as { guest_cid: number; uds_path: string; server: Server } | undefined,
  nets: new Map<string, NetIf>(),
  logger: undefined as Record<string, unknown> | undefined,
  metrics: undefined as Record<string, unknown> | undefined,
};
let state: 'Not started' | 'Running' | 'Paused' = 'Not started';
/** Set by any boot-specific resource (Firecracker's `boot_path`): a snapshot load is refused after it. */
let bootPath = false;
/** The VM came from a snapshot (GET /vm/config then has no boot-source, as in Firecracker). */
let restored = false;
/** A failed snapshot load leaves Firecracker "too dirty to recover": it answers, then exits with this. */
let exitAfterResponse: number | undefined;

class Fault extends Error {}
const PRE_BOOT_ONLY = 'The requested operation is not supported after starting the microVM.';
const POST_BOOT_ONLY = 'The requested operation is not supported before starting the microVM.';
const DESERIALIZE = 'An error occurred when deserializing the json body of a request';
// src/firecracker/src/api_server/request/snapshot.rs (v1.15.1)
const MISSING_MEM = 'missing field: either `mem_backend` or `mem_file_path` is required';
const TOO_MANY_MEM = 'too many fields: either `mem_backend` or `mem_file_path` exclusively is required';

/** A path as this process sees it: inside the emulated chroot when there is one. */
const CHROOT = process.env.FC_DOUBLE_CHROOT;
function host(p: string): string {
  return CHROOT ? join(CHROOT, resolve('/', p)) : p;
}

function canOpen(path: string, write: boolean): string | undefined {
  try { closeSync(openSync(host(path), write ? fsc.O_RDWR : fsc.O_RDONLY)); return undefined; } catch (e) { return (e as Error).message; }
}

function isElf(path: string): boolean {
  const fd = openSync(host(path), 'r');
  try { const b = Buffer.alloc(4); readSync(fd, b, 0, 4, 0); return b.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])); } finally { closeSync(fd); }
}

// ---- the API ----
const cli = parseCli(process.argv.slice(2));
const spec = FirecrackerApiSpec.load(PARSED_VERSION?.major === 1 && PARSED_VERSION.minor === 16 ? '1.16.1' : '1.15.1', 'firecracker');
const apiSockPath = host(cli.apiSock);
if (existsSync(apiSockPath)) {
  // Firecracker binds without unlinking first: a stale socket file is fatal.
  process.stderr.write(`Error creating the HTTP server: IO error: Address in use (os error 98) (${apiSockPath})\n`);
  process.exit(1);
}

async function handle(method: string, path: string, body: unknown): Promise<{ status: number; body?: unknown }> {
  const v = spec.validateRequest({ method, path, body });
  if (!v.ok) {
    if (!spec.match(method, path)) throw new Fault(`Invalid request method and/or path: ${method} ${path.split('?')[0]}.`);
    throw new Fault(`${DESERIALIZE}: ${v.errors.join('; ')}`);
  }
  const route = `${method} ${spec.match(method, path)!.template}`;
  const param = spec.match(method, path)!.params[0];
  const b = body as Record<string, any>;
  const preBoot = () => { if (state !== 'Not started') throw new Fault(PRE_BOOT_ONLY); };
  switch (route) {
    case 'GET /':
      return { status: 200, body: { app_name: 'Firecracker', id: cli.id, state, vmm_version: VERSION } };
    case 'GET /version':
      return { status: 200, body: { firecracker_version: VERSION } };
    case 'GET /machine-config':
      return { status: 200, body: vmConfig.machine };
    case 'GET /vm/config':
      return { status: 200, body: { 'boot-source': restored ? undefined : vmConfig.boot, 'machine-config': vmConfig.machine, drives: [...vmConfig.drives.values()], 'network-interfaces': [...vmConfig.nets.values()], vsock: vmConfig.vsock && { guest_cid: vmConfig.vsock.guest_cid, uds_path: vmConfig.vsock.uds_path } } };
    case 'PUT /machine-config':
    case 'PATCH /machine-config': {
      preBoot();
      const next: Record<string, any> = method === 'PUT' ? { smt: false, track_dirty_pages: false, ...b } : { ...vmConfig.machine, ...b };
      if (next.smt && next.vcpu_count > 1 && next.vcpu_count % 2) throw new Fault('Machine config error: The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.');
      if (!next.mem_size_mib) throw new Fault('Machine config error: The memory size (MiB) is invalid.');
      bootPath = true;
      vmConfig.machine = next;
      return { status: 204 };
    }
    case 'PUT /boot-source': {
      preBoot();
      const err = canOpen(b.kernel_image_path, false);
      if (err) throw new Fault(`Boot source error: The kernel file cannot be opened: ${err}`);
      if (b.initrd_path !== undefined) {
        const e2 = canOpen(b.initrd_path, false);
        if (e2) throw new Fault(`Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. ${e2}`);
      }
      bootPath = true;
      vmConfig.boot = b as typeof vmConfig.boot;
      return { status: 204 };
    }
    case 'PUT /drives/{drive_id}': {
      preBoot();
      if (b.drive_id !== param) throw new Fault('The id from the path does not match the id from the body!');
      if (b.socket !== undefined) throw new Fault('vhost-user block devices are not supported by the emberd Firecracker test double');
      if (b.path_on_host === undefined || b.is_read_only === undefined) throw new Fault('Drive config error: path_on_host and is_read_only are required for virtio-block');
      if (b.is_root_device && [...vmConfig.drives.values()].some((d) => d.is_root_device && d.drive_id !== b.drive_id)) throw new Fault('Drive config error: A root block device already exists!');
      const err = canOpen(b.path_on_host, !b.is_read_only);
      if (err) throw new Fault(`Drive config error: Unable to create the virtio block device: ${err}`);
      bootPath = true;
      vmConfig.drives.set(b.drive_id, b as Drive);
      return { status: 204 };
    }
    case 'PUT /network-interfaces/{iface_id}': {
      preBoot();
      if (b.iface_id !== param) throw new Fault('The id from the path does not match the id from the body!');
      for (const k of ['rx_rate_limiter', 'tx_rate_limiter']) if (b[k] !== undefined) throw new Fault(`${k} is not supported by the emberd Firecracker test double`);
      if (b.guest_mac !== undefined && [...vmConfig.nets.values()].some((n) => n.iface_id !== b.iface_id && n.guest_mac?.toLowerCase() === String(b.guest_mac).toLowerCase())) {
        throw new Fault(`The MAC address is already in use: ${b.guest_mac}`);
      }
      if ([...vmConfig.nets.values()].some((n) => n.iface_id !== b.iface_id && n.host_dev_name === b.host_dev_name)) {
        throw new Fault(tapFault(b.host_dev_name, 'Device or resource busy (os error 16)')); // the tap is attached already
      }
      if (vmConfig.nets.size && !vmConfig.nets.has(b.iface_id)) throw new Fault('more than one network interface is not supported by the emberd Firecracker test double');
      checkTap(b.host_dev_name);
      bootPath = true;
      vmConfig.nets.set(b.iface_id, { iface_id: b.iface_id, host_dev_name: b.host_dev_name, ...(b.guest_mac !== undefined ? { guest_mac: b.guest_mac } : {}) });
      return { status: 204 };
    }
    case 'PUT /vsock': {
      preBoot();
      bootPath = true;
      const server = await bindVsock(b.uds_path);
      vmConfig.vsock?.server.close();
      vmConfig.vsock = { guest_cid: b.guest_cid, uds_path: b.uds_path, server };
      return { status: 204 };
    }
    case 'PUT /logger': {
      preBoot();
      if (vmConfig.logger) throw new Fault('Logger error: the logger can only be configured once');
      if (b.log_path !== undefined) { const err = canOpen(b.log_path, true); if (err) throw new Fault(`Logger error: Failed to open target file: ${err}`); }
      vmConfig.logger = b;
      return { status: 204 };
    }
    case 'PUT /metrics': {
      preBoot();
      if (vmConfig.metrics) throw new Fault('Metrics error: Reinitialization of metrics not allowed.');
      const err = canOpen(b.metrics_path, true);
      if (err) throw new Fault(`Metrics error: Failed to open target file: ${err}`);
      vmConfig.metrics = b;
      return { status: 204 };
    }
    case 'PUT /actions':
      switch (b.action_type) {
        case 'InstanceStart':
          preBoot();
          await instanceStart();
          return { status: 204 };
        case 'SendCtrlAltDel':
          if (state !== 'Running') throw new Fault(POST_BOOT_ONLY);
          // Firecracker presses Ctrl+Alt+Del on its i8042; the guest kernel restarts and
          // Firecracker exits. QEMU quitting ends the double the same way.
          await qmp!.execute('quit', undefined, 2000).catch(() => {});
          return { status: 204 };
        case 'FlushMetrics':
          if (!vmConfig.metrics) throw new Fault('Metrics error: Metrics system not initialized.');
          return { status: 204 };
      }
      break;
    case 'PATCH /vm':
      if (state === 'Not started') throw new Fault(POST_BOOT_ONLY);
      // Successive pauses (or resumes) are accepted and change nothing.
      if (b.state === 'Paused' && state === 'Running') { await qmp!.execute('stop'); state = 'Paused'; }
      if (b.state === 'Resumed' && state === 'Paused') { await qmp!.execute('cont'); state = 'Running'; }
      return { status: 204 };
    case 'PUT /snapshot/create':
      if (state === 'Not started') throw new Fault(POST_BOOT_ONLY);
      // Firecracker's vCPUs refuse to save their state while running (VcpuResponse::NotAllowed).
      if (state !== 'Paused') throw new Fault('Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running');
      if (vmConfig.nets.size) throw new Fault('snapshots of a VM with a network interface are not supported by the emberd Firecracker test double');
      if (b.snapshot_type === 'Diff') throw new Fault('Diff snapshots are not supported by the emberd Firecracker test double');
      await createSnapshot(b.snapshot_path, b.mem_file_path);
      return { status: 204 };
    case 'PUT /snapshot/load':
      await loadSnapshot(b);
      return { status: 204 };
  }
  throw new Fault(`${method} ${path} is valid Firecracker API but not supported by the emberd Firecracker test double`);
}

function record(entry: Record<string, unknown>): void {
  const file = process.env.FC_DOUBLE_RECORD;
  if (file) appendFileSync(file, JSON.stringify({ pid: process.pid, ...entry }) + '\n');
}

const api = createHttpServer({ keepAlive: true }, (req: IncomingMessage, res: ServerResponse) => {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => { size += c.length; if (size <= MAX_PAYLOAD) chunks.push(c); });
  req.on('end', () => {
    void (async () => {
      const method = req.method ?? 'GET';
      const path = req.url ?? '/';
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      let out: { status: number; body?: unknown };
      try {
        if (size > MAX_PAYLOAD) throw new Fault(`Request payload with size ${size} is larger than the limit of ${MAX_PAYLOAD} allowed by server.`);
        if (raw.trim() !== '') {
          try { body = JSON.parse(raw); } catch (e) { throw new Fault(`An error occurred when deserializing the json body of a request: ${(e as Error).message}`); }
        }
        out = await handle(method, path, body);
      } catch (e) {
        out = { status: 400, body: { fault_message: e instanceof Fault ? e.message : `internal error: ${(e as Error).message}` } };
      }
      record({ method, path, body: body ?? (raw === '' ? undefined : raw), status: out.status, ...(out.status >= 300 ? { fault_message: (out.body as { fault_message: string }).fault_message } : {}) });
      const text = out.body === undefined ? '' : JSON.stringify(out.body);
      res.writeHead(out.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      const exitCode = exitAfterResponse;
      res.end(text, () => {
        if (exitCode === undefined) return;
        process.stderr.write(`[firecracker-double] Firecracker exiting with error. exit_code=${exitCode}\n`);
        process.exit(exitCode);
      });
    })();
  });
});
api.on('error', (e) => { process.stderr.write(`Error creating the HTTP server: ${e.message}\n`); process.exit(1); });
api.listen(apiSockPath, () => {
  const fd = Number(process.env.FC_DOUBLE_READY_FD);
  if (!fd) return;
  writeSync(fd, 'READY=1\n');
  closeSync(fd); // before QEMU is spawned, which would otherwise inherit it
});

// ---- network interfaces ----

/** Firecracker's error for a tap it cannot attach (vmm_config/net.rs, devices/virtio/net/tap.rs). */
function tapFault(name: string, osError: string, note = ''): string {
  return `Could not create the network device: Open tap device failed: Error while creating ifreq structure: ${osError}. Invalid TUN/TAP Backend provided by ${name}. Check our documentation on setting up the network devices.${note}`;
}

/**
 * What Firecracker's TUNSETIFF(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) on host_dev_name needs, in this
 * process's network namespace: an interface of that name (read from /proc/self/net/dev, which is
 * per netns, unlike /sys/class/net, which shows the netns sysfs was mounted in), that is a tap
 * without multi_queue. Deviation: Firecracker with CAP_NET_ADMIN (root, no jailer) would create a
 * new tap for a name that does not exist, connected to nothing; the double refuses, with the
 * error an unprivileged (jailed) Firecracker gets. The tap's owner is not checked: the double
 * runs as root (the stand-in jailer drops no uid), and root may attach to any tap.
 */
function checkTap(name: string): void {
  if (!name || Buffer.byteLength(name) >= 16) throw new Fault('Could not create the network device: Open tap device failed: Invalid interface name');
  const here = readFileSync('/proc/self/net/dev', 'utf8').split('\n').slice(2).map((l) => l.split(':')[0]!.trim()).filter(Boolean);
  if (!here.includes(name)) {
    throw new Fault(tapFault(name, 'Operation not permitted (os error 1)', ` (emberd Firecracker test double: there is no interface ${name} in this process's network namespace; interfaces here: ${here.join(', ')})`));
  }
  if (!IP) return; // no iproute2: existence is all that can be checked
  const [link] = JSON.parse(execFileSync(IP, ['-d', '-j', 'link', 'show', 'dev', name], { encoding: 'utf8' })) as { linkinfo?: { info_kind?: string; info_data?: { type?: string; multi_queue?: boolean } } }[];
  const info = link?.linkinfo;
  if (info?.info_kind !== 'tun' || info.info_data?.type !== 'tap' || info.info_data.multi_queue) {
    throw new Fault(tapFault(name, 'Invalid argument (os error 22)', ` (emberd Firecracker test double: ${name} is ${info?.info_kind === 'tun' ? `a ${info.info_data?.type}${info.info_data?.multi_queue ? ' with multi_queue' : ''}` : `of kind ${info?.info_kind ?? 'none'}`}, not a single-queue tap)`));
  }
}

/** The guest's NIC as QEMU takes it (qemuArgs' network): the tap, and the MAC (Firecracker picks one when none is given). */
function guestNetwork(): { netns: string; tap: string; mac: string } | undefined {
  const n = [...vmConfig.nets.values()][0];
  if (!n) return undefined;
  const mac = n.guest_mac ?? `06:${[...randomBytes(5)].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
  return { netns: '', tap: n.host_dev_name, mac };
}

// ---- the guest, under QEMU ----
let qemu: VmmProcess | undefined;
let qmp: QmpClient | undefined;
const names = { control: `emberd-fcd-${process.pid}-${randomBytes(4).toString('hex')}-control`, qmp: `emberd-fcd-${process.pid}-${randomBytes(4).toString('hex')}-qmp` };

/** Firecracker's kernel command line for this config, plus what QEMU under TCG needs. */
function kernelCommandLine(accel: 'kvm' | 'tcg'): string {
  const words = (vmConfig.boot?.boot_args ?? DEFAULT_BOOT_ARGS).split(/\s+/).filter(Boolean);
  const root = [...vmConfig.drives.values()].find((d) => d.is_root_device);
  if (root) words.push(root.partuuid ? `root=PARTUUID=${root.partuuid}` : 'root=/dev/vda', root.is_read_only ? 'ro' : 'rw');
  words.push('pci=off'); // Firecracker appends it unless --enable-pci
  // Double-only: QEMU/TCG timer words (see src/vmm/qemu/cmdline.ts) and a fast reboot under microvm.
  if (accel === 'tcg') { words.push('tsc=reliable', 'no_timer_check'); const k = hostTscKhz(); if (k) words.push(`tsc_early_khz=${k}`); }
  words.push('reboot=t');
  return words.join(' ');
}

function replaceValue(args: string[], flag: string, match: (v: string) => boolean, value: string): void {
  const i = args.findIndex((a, j) => a === flag && match(args[j + 1] ?? ''));
  if (i < 0) throw new Error(`qemu args have no ${flag}`);
  args[i + 1] = value;
}

function buildQemuArgs(): string[] {
  const accel = probeKvm().usable ? 'kvm' : 'tcg';
  const boot = vmConfig.boot!;
  // Firecracker attaches the root drive first, then the others in the order they were added.
  const drives = [...vmConfig.drives.values()].sort((a, b) => Number(b.is_root_device) - Number(a.is_root_device));
  const args = qemuArgs({
    id: cli.id,
    runDir: '/',
    kernel: host(boot.kernel_image_path),
    initramfs: boot.initrd_path ? host(boot.initrd_path) : '',
    packImage: drives[0]?.path_on_host ? host(drives[0].path_on_host) : '',
    machine: { vcpus: Number(vmConfig.machine.vcpu_count), memoryMib: Number(vmConfig.machine.mem_size_mib) },
    kernelArgs: [],
    deadline: 0,
    network: guestNetwork(),
  }, { controlSocket: names.control, qmpSocket: names.qmp }, { accel });
  replaceValue(args, '-append', () => true, kernelCommandLine(accel));
  // Abstract sockets: nothing of the double's own is left on disk, even when it is SIGKILLed.
  replaceValue(args, '-chardev', (v) => v.startsWith('socket,id=control,'), `socket,id=control,path=${names.control},abstract=on,server=on,wait=off`);
  replaceValue(args, '-qmp', () => true, `unix:${names.qmp},abstract=on,server=on,wait=off`);
  if (!boot.initrd_path) args.splice(args.indexOf('-initrd'), 2);
  // Replace the qemu backend's single pack drive with Firecracker's drive list.
  const di = args.indexOf('-drive');
  args.splice(di, 4, ...drives.flatMap((d, n) => [
    '-drive', `id=d${n},file=${host(d.path_on_host!)},format=raw,if=none,readonly=${d.is_read_only ? 'on' : 'off'}`,
    '-device', `virtio-blk-device,drive=d${n}`,
  ]));
  return args;
}

async function instanceStart(): Promise<void> {
  if (!vmConfig.boot) throw new Fault('Start microvm error: Cannot start microvm without kernel configuration.');
  if (!isElf(vmConfig.boot.kernel_image_path)) {
    throw new Fault('Start microvm error: Cannot load kernel due to invalid memory configuration or invalid kernel image: Kernel Loader: failed to load ELF kernel image: Invalid Elf magic number');
  }
  try {
    await startQemu([]);
  } catch (e) {
    throw new Fault(`Start microvm error: ${(e as Error).message}`);
  }
  state = 'Running';
  endWithVm();
}

/** Starts QEMU for the configured VM (plus `extra` args) and attaches QMP; throws with QEMU's output if it dies. */
async function startQemu(extra: string[]): Promise<void> {
  const proc = spawnVmm(findQemu(process.env.FC_DOUBLE_QEMU), [...buildQemuArgs(), ...extra]);
  // Serial console -> stdout (Firecracker's behaviour); QEMU's own messages -> stderr.
  proc.child.stdout!.on('data', (b: Buffer) => process.stdout.write(b));
  proc.child.stderr!.on('data', (b: Buffer) => process.stderr.write(b));
  const died = proc.exited.then((e) => { throw new Error(`the VM could not be built (QEMU exited with ${e.signal ?? e.code}): ${proc.console.tail(1000).trim()}`); });
  died.catch(() => {});
  qemu = proc;
  try {
    qmp = await Promise.race([connectUnix(`\0${names.qmp}`, Date.now() + 30_000).then((s) => QmpClient.attach(s, 30_000)), died]);
  } catch (e) {
    proc.child.kill('SIGKILL');
    throw e;
  }
}

/**
 * The guest rebooted (reboot=k/t), powered off via QMP quit, or QEMU died: Firecracker exits
 * when its VM ends, so does the double, sockets left in place.
 */
function endWithVm(): void {
  void qemu!.exited.then(({ code, signal }) => {
    process.stderr.write(`[firecracker-double] the VM ended (QEMU ${signal ?? `exit ${code}`})\n`);
    process.exit(code === 0 ? 0 : 1);
  });
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

// ---- snapshots ----

/**
 * PUT /snapshot/create on a paused VM. Firecracker writes the state file, then the guest memory;
 * the double writes QEMU's migration stream (memory and device state, through zstd as the QEMU
 * backend does) at mem_file_path and its state file (./snapshot-file.ts) at snapshot_path.
 */
async function createSnapshot(snapshotPath: string, memFilePath: string): Promise<void> {
  const files = [[host(snapshotPath), 'snapshot'], [host(memFilePath), 'memory']] as const;
  for (const [f, what] of files) {
    try { closeSync(openSync(f, 'a')); } catch (e) { throw new Fault(`Create snapshot error: Cannot perform open on the ${what} backing file: ${(e as Error).message}`); }
  }
  try {
    await qmp!.execute('migrate', { uri: `exec:zstd -q -1 -f -o ${shellQuote(host(memFilePath))}` });
    for (;;) {
      const m = (await qmp!.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      if (m.status === 'completed') break;
      if (m.status === 'failed' || m.status === 'cancelled') throw new Error(m['error-desc'] ?? m.status);
      await new Promise((r) => setTimeout(r, 20));
    }
  } catch (e) {
    throw new Fault(`Create snapshot error: Cannot write memory file: ${(e as Error).message}`);
  }
  const saved: DoubleVmState = {
    version: SNAPSHOT_FORMAT,
    firecracker_version: VERSION,
    machine: vmConfig.machine,
    boot: vmConfig.boot!,
    drives: [...vmConfig.drives.values()],
    ...(vmConfig.vsock ? { vsock: { guest_cid: vmConfig.vsock.guest_cid, uds_path: vmConfig.vsock.uds_path } } : {}),
    memory: { encoding: 'qemu-migration+zstd' },
  };
  writeFileSync(host(snapshotPath), encodeVmState(saved));
  // Firecracker resets the vsock device while snapshotting: the guest drops its connections
  // when it runs again. The double drops the bridged one.
  bridge?.client.destroy();
  bridge?.guest.destroy();
  bridge = undefined;
}

/**
 * PUT /snapshot/load. Request-level errors (both or neither memory field; boot-specific resources
 * already configured) leave the process as it was; once the restore has begun, any failure is
 * answered and then ends the process with exit code 1, as in Firecracker.
 */
async function loadSnapshot(b: Record<string, any>): Promise<void> {
  if (state !== 'Not started') throw new Fault(PRE_BOOT_ONLY);
  if (b.mem_backend !== undefined && b.mem_file_path !== undefined) throw new Fault(`${DESERIALIZE}: ${TOO_MANY_MEM}`);
  if (b.mem_backend === undefined && b.mem_file_path === undefined) throw new Fault(`${DESERIALIZE}: ${MISSING_MEM}`);
  if (bootPath) throw new Fault('Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.');
  const mem: { backend_type: string; backend_path: string } = b.mem_backend ?? { backend_type: 'File', backend_path: b.mem_file_path };
  if (mem.backend_type !== 'File') throw new Fault('Uffd memory backends are not supported by the emberd Firecracker test double');
  const restoreFault = (m: string) => new Fault(`Load snapshot error: Failed to restore from snapshot: ${m}`);
  try {
    let raw: Buffer;
    try { raw = readFileSync(host(b.snapshot_path)); } catch (e) { throw restoreFault(`Failed to get snapshot state from file: Failed to open snapshot file: ${(e as Error).message}`); }
    let saved: DoubleVmState;
    try { saved = decodeVmState(raw, SNAPSHOT_FORMAT); } catch (e) {
      if (e instanceof SnapshotFileError) throw restoreFault(`Failed to get snapshot state from file: Failed to load snapshot state from file: ${e.message}`);
      throw e;
    }
    // The state has no network devices: any override names an unknown one.
    if (Array.isArray(b.network_overrides) && b.network_overrides.length) throw restoreFault('Failed to get snapshot state from file: Unknown Network Device.');
    if (b.vsock_override && !saved.vsock) throw restoreFault('Failed to get snapshot state from file: Unknown Vsock Device.');
    vmConfig.machine = saved.machine;
    vmConfig.boot = saved.boot;
    vmConfig.drives = new Map(saved.drives.map((d) => [d.drive_id, d]));
    const memErr = canOpen(mem.backend_path, false);
    if (memErr) throw restoreFault(`Failed to load guest memory: Error creating guest memory from file: Failed to load guest memory: ${memErr}`);
    for (const d of saved.drives) {
      const err = canOpen(d.path_on_host!, !d.is_read_only);
      if (err) throw restoreFault(`Failed to build microVM from snapshot: Cannot restore devices: Block device ${d.drive_id}: ${err}`);
    }
    for (const f of [saved.boot.kernel_image_path, saved.boot.initrd_path]) {
      const err = f === undefined ? undefined : canOpen(f, false);
      if (err) throw restoreFault(`emberd Firecracker test double: the kernel/initrd the snapshot was booted with must still be at ${f} (QEMU rebuilds the machine from them; Firecracker would not need them): ${err}`);
    }
    if (saved.vsock) {
      const udsPath: string = b.vsock_override?.uds_path ?? saved.vsock.uds_path;
      let server: Server;
      try { server = await bindVsock(udsPath); } catch (e) {
        throw restoreFault(`Failed to build microVM from snapshot: Cannot restore devices: VsockUnixBackend: Error binding to the host-side Unix socket ${udsPath}: ${(e as Error).message}`);
      }
      vmConfig.vsock = { guest_cid: saved.vsock.guest_cid, uds_path: udsPath, server };
    }
    try {
      await startQemu(['-incoming', `exec:zstd -dcq ${shellQuote(host(mem.backend_path))}`]);
      const deadline = Date.now() + 60_000;
      for (;;) {
        const st = (await qmp!.execute('query-status')) as { status: string };
        if (st.status === 'paused' || st.status === 'postmigrate') break;
        if (st.status !== 'inmigrate') throw new Error(`the VM is ${st.status} after the incoming migration`);
        if (Date.now() > deadline) throw new Error('the incoming migration did not finish within 60 s');
        await new Promise((r) => setTimeout(r, 10));
      }
    } catch (e) {
      throw restoreFault(`Failed to build microVM from snapshot: ${(e as Error).message}`);
    }
    restored = true;
    state = 'Paused';
    endWithVm();
    if (b.resume_vm) {
      await qmp!.execute('cont');
      state = 'Running';
    }
  } catch (e) {
    exitAfterResponse = 1;
    if (qemu?.isRunning()) qemu.child.kill('SIGKILL');
    throw e instanceof Fault ? e : restoreFault((e as Error).message);
  }
}

// ---- hybrid vsock ----
let nextHostPort = FIRST_HOST_PORT;
let bridge: { client: Socket; guest: Socket } | undefined;

function bindVsock(apiPath: string): Promise<Server> {
  const path = host(apiPath);
  return new Promise((resolve, reject) => {
    if (existsSync(path)) { reject(new Fault(`Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: Address in use (os error 98)`)); return; }
    const server = createNetServer((c) => onVsockConnection(c));
    server.once('error', (e) => reject(new Fault(`Vsock config error: Cannot create backend for vsock device: ${e.message}`)));
    server.listen(path, () => resolve(server));
  });
}

/** Does the guest listen on the agent port? For virtio-serial: has it opened the port? */
async function guestListening(): Promise<boolean> {
  if (!qmp || state !== 'Running') return false;
  try {
    const chardevs = await qmp.execute('query-chardev', undefined, 2000) as { label: string; 'frontend-open': boolean }[];
    return chardevs.some((c) => c.label === 'control' && c['frontend-open']);
  } catch {
    return false;
  }
}

function onVsockConnection(c: Socket): void {
  let buf = Buffer.alloc(0);
  const onData = (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    const nl = buf.indexOf(0x0a);
    if (nl < 0) { if (buf.length > 64) c.destroy(); return; }
    c.removeListener('data', onData);
    c.pause();
    const line = buf.subarray(0, nl).toString('latin1');
    const rest = buf.subarray(nl + 1);
    const m = /^CONNECT (\d+)$/.exec(line);
    void (async () => {
      // No listener for that port in the guest -> Firecracker closes the connection: EOF.
      if (!m || Number(m[1]) !== AGENT_PORT || !(await guestListening())) { c.end(); return; }
      bridge?.client.destroy();
      bridge?.guest.destroy();
      let guest: Socket;
      try {
        guest = await new Promise<Socket>((resolve, reject) => {
          const g = createConnection({ path: `\0${names.control}` });
          g.once('connect', () => resolve(g));
          g.once('error', reject);
        });
      } catch { c.end(); return; }
      const mine = { client: c, guest };
      bridge = mine;
      c.write(`OK ${nextHostPort++}\n`);
      if (rest.length) guest.write(rest);
      c.pipe(guest);
      guest.pipe(c);
      const close = () => { c.destroy(); guest.destroy(); if (bridge === mine) bridge = undefined; };
      c.on('close', close);
      guest.on('close', close);
      c.on('error', close);
      guest.on('error', close);
      c.resume();
    })();
  };
  c.on('data', onData);
  c.on('error', () => c.destroy());
}

// A normal exit takes QEMU along; a fatal signal does too (QEMU runs with PDEATHSIG=SIGKILL).
process.on('exit', () => { if (qemu?.isRunning()) qemu.child.kill('SIGKILL'); });
// Dies with its parent even when started without PDEATHSIG (e.g. straight from a test): once
// reparented, exit.
const parent = process.ppid;
if (!process.env.FC_DOUBLE_NO_PARENT_WATCH) setInterval(() => { if (process.ppid !== parent) process.exit(1); }, 500).unref();
