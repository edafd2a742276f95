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
//  - never unlinks its sockets (Firecracker doesn't either: the driver must);
//  - dies with its parent (spawned with PDEATHSIG by the driver) and QEMU dies with it (same).
// Deviations, on purpose: the guest sees virtio-serial instead of a virtio-vsock device (QEMU
// has no hybrid vsock and this host no vhost-vsock), and the kernel command line gets QEMU/TCG's
// timer words plus `reboot=t` (under QEMU microvm `reboot=k` takes ~1.5 s to fall through).
//
// Environment: FC_DOUBLE_RECORD=FILE appends one JSON line per API request
// ({method, path, body, status, fault_message}); FC_DOUBLE_VERSION overrides the version it
// reports (to test the driver's refusal); FC_DOUBLE_QEMU picks the QEMU binary;
// FC_DOUBLE_CHROOT=DIR resolves every path (API socket, files, UDS) under DIR, as a Firecracker
// chrooted by the jailer would see them (set by fake-jailer.ts); FC_DOUBLE_NO_PARENT_WATCH=1 keeps
// it alive when its parent exits (the jailer exits after starting Firecracker).
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, createConnection, type Server, type Socket } from 'node:net';
import { appendFileSync, closeSync, existsSync, openSync, readSync, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { FirecrackerApiSpec } from '../../src/vmm/firecracker/api-spec.ts';
import { qemuArgs } from '../../src/vmm/qemu/cmdline.ts';
import { QmpClient } from '../../src/vmm/qemu/qmp.ts';
import { findQemu } from '../../src/vmm/qemu/qemu-backend.ts';
import { hostTscKhz, probeKvm } from '../../src/vmm/host.ts';
import { spawnVmm, type VmmProcess } from '../../src/vmm/vmm-process.ts';
import { connectUnix } from '../../src/agent/connect.ts';

export const DOUBLE_MARKER = 'emberd-firecracker-double';
const VERSION = process.env.FC_DOUBLE_VERSION ?? '1.15.1';
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
interface Drive { drive_id: string; path_on_host?: string; is_root_device: boolean; is_read_only?: boolean; partuuid?: string }
const vmConfig = {
  machine: { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false } as Record<string, unknown>,
  boot: undefined as { kernel_image_path: string; initrd_path?: string; boot_args?: string } | undefined,
  drives: new Map<string, Drive>(),
  vsock: undefined as { guest_cid: number; uds_path: string; server: Server } | undefined,
  logger: undefined as Record<string, unknown> | undefined,
  metrics: undefined as Record<string, unknown> | undefined,
};
let state: 'Not started' | 'Running' = 'Not started';

class Fault extends Error {}
const PRE_BOOT_ONLY = 'The requested operation is not supported after starting the microVM.';
const POST_BOOT_ONLY = 'The requested operation is not supported before starting the microVM.';

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
const spec = FirecrackerApiSpec.load('1.15.1', 'firecracker');
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
    throw new Fault(`An error occurred when deserializing the json body of a request: ${v.errors.join('; ')}`);
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
      return { status: 200, body: { 'boot-source': vmConfig.boot, 'machine-config': vmConfig.machine, drives: [...vmConfig.drives.values()], vsock: vmConfig.vsock && { guest_cid: vmConfig.vsock.guest_cid, uds_path: vmConfig.vsock.uds_path } } };
    case 'PUT /machine-config':
    case 'PATCH /machine-config': {
      preBoot();
      const next: Record<string, any> = method === 'PUT' ? { smt: false, track_dirty_pages: false, ...b } : { ...vmConfig.machine, ...b };
      if (next.smt && next.vcpu_count > 1 && next.vcpu_count % 2) throw new Fault('Machine config error: The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.');
      if (!next.mem_size_mib) throw new Fault('Machine config error: The memory size (MiB) is invalid.');
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
      vmConfig.drives.set(b.drive_id, b as Drive);
      return { status: 204 };
    }
    case 'PUT /vsock': {
      preBoot();
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
      res.end(text);
    })();
  });
});
api.on('error', (e) => { process.stderr.write(`Error creating the HTTP server: ${e.message}\n`); process.exit(1); });
api.listen(apiSockPath);

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
  const proc = spawnVmm(findQemu(process.env.FC_DOUBLE_QEMU), buildQemuArgs());
  // Serial console -> stdout (Firecracker's behaviour); QEMU's own messages -> stderr.
  proc.child.stdout!.on('data', (b: Buffer) => process.stdout.write(b));
  proc.child.stderr!.on('data', (b: Buffer) => process.stderr.write(b));
  const died = proc.exited.then((e) => { throw new Fault(`Start microvm error: the VM could not be built (QEMU exited with ${e.signal ?? e.code}): ${proc.console.tail(1000).trim()}`); });
  died.catch(() => {});
  try {
    qmp = await Promise.race([connectUnix(`\0${names.qmp}`, Date.now() + 30_000).then((s) => QmpClient.attach(s, 30_000)), died]);
  } catch (e) {
    proc.child.kill('SIGKILL');
    throw e instanceof Fault ? e : new Fault(`Start microvm error: ${(e as Error).message}`);
  }
  qemu = proc;
  state = 'Running';
  // The guest rebooted (reboot=k/t), powered off via QMP quit, or QEMU died: Firecracker exits
  // when its VM ends, so does the double, sockets left in place.
  void proc.exited.then(({ code, signal }) => {
    process.stderr.write(`[firecracker-double] the VM ended (QEMU ${signal ?? `exit ${code}`})\n`);
    process.exit(code === 0 ? 0 : 1);
  });
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
