// Daemon configuration: flags override environment variables override defaults.
import { parseUpstream, systemUpstream, type Upstream } from '../sandbox/egress/resolver.ts';
import { parseArgs } from 'node:util';
import { LOG_LEVELS, type LogLevel } from '../log.ts';
import { availableParallelism } from 'node:os';
import { LONGEST_TIMEOUT_S, MIN_MEMORY_MIB, type AdmissionOptions, type ExecLimits, type SandboxOptions } from '../sandbox/manager.ts';
import { join } from 'node:path';
import { defaultRunBase } from '../sandbox/run-dir.ts';
import { defaultStateDir } from '../state-dir.ts';
import { isLoopback } from './loopback.ts';
import type { VmmOptions } from '../vmm/select.ts';
import type { MachineConfig } from '../vmm/backend.ts';
import type { HttpLimits } from './http/server.ts';

/** Everything the daemon is told, grouped by the component that takes it (each passed whole). */
export interface DaemonConfig {
  listen: { host: string; port: number };
  imagesDir: string | undefined;
  runDir: string;
  vmm: VmmOptions;
  sandboxes: SandboxOptions;
  admission: AdmissionOptions;
  exec: ExecLimits;
  http: HttpLimits;
  /** Golden snapshots per pack (--snapshots), and the shapes besides the default that get one. */
  snapshots: boolean;
  snapshotShapes: MachineConfig[];
  logLevel: LogLevel;
  /** Where state that outlives the process lives (the token file by default). */
  stateDir: string;
  /** Bearer-token auth: on when asked, or by default when listening beyond loopback. */
  auth: { enabled: boolean; tokenFile: string };
  /** Paused sandboxes: kept under STATE_DIR/paused (--paused-retention, --paused-disk-max), and --on-shutdown. */
  paused: { dir: string; retentionS: number; diskMaxMib: number };
  onShutdown: 'destroy' | 'pause';
  /** Sandbox networks (docs/network.md "Egress"): the resolver's upstream, the default rate. */
  egress: { dns: Upstream | undefined; rateMbit: number | undefined };
}

export const USAGE = `usage: emberd [options]            run the daemon
       emberd images build [--dir DIR] [--only LIST] [--force]
       emberd images path | verify
       emberd packs build SPEC | import NAME (--oci-archive FILE | --rootfs DIR) | list   (docs/packs.md)
       emberd mcp [--addr HOST:PORT] [--token-file PATH]   MCP server on stdio for the running daemon
       emberd mcp config [--addr HOST:PORT]   agent-host configuration (docs/mcp.md)

options (environment variable in brackets):
  --addr HOST:PORT         listen address [EMBERD_ADDR] (default 127.0.0.1:7777)
  --images-dir DIR         built images [EMBERD_IMAGES_DIR] (default $XDG_CACHE_HOME/emberd/images)
  --run-dir DIR            per-sandbox sockets [EMBERD_RUN_DIR] (default /run/emberd as root)
  --backend NAME           auto | qemu | firecracker [EMBERD_BACKEND] (default auto)
  --qemu PATH              qemu-system-x86_64 binary [EMBERD_QEMU]
  --qemu-confine auto|off  confine each QEMU [EMBERD_QEMU_CONFINE] (default auto: as root an unprivileged
                           uid, chroot, pid/net/ipc namespaces and a cgroup; as a user, namespaces where
                           possible; seccomp always; off: QEMU as emberd's own user, seccomp only)
  --shared-memory auto|on|off  QEMU clones map the golden snapshot's RAM file copy-on-write
                           [EMBERD_SHARED_MEMORY] (default auto: where QEMU can open it read-only (8.2+)
                           or runs as emberd's own uid; on QEMU 7.2 as root a compromised QEMU could
                           write it: docs/security.md); off: every clone loads the whole stream
  --qemu-uid N             uid QEMU runs as when emberd is root [EMBERD_QEMU_UID] (default 65534)
  --qemu-gid N             gid QEMU runs as when emberd is root [EMBERD_QEMU_GID] (default 65534)
  --firecracker PATH       firecracker binary [EMBERD_FIRECRACKER] (default: PATH, /usr/local/bin, /usr/bin)
  --jailer auto|off|PATH   run Firecracker under its jailer [EMBERD_JAILER] (default auto: on as root
                           when a jailer binary is next to firecracker or on PATH)
  --jailer-base DIR        jailer chroot base [EMBERD_JAILER_BASE] (default /srv/jailer)
  --jailer-uid N           uid Firecracker runs as under the jailer [EMBERD_JAILER_UID] (default 65534)
  --jailer-gid N           gid Firecracker runs as under the jailer [EMBERD_JAILER_GID] (default 65534)
  --vcpus N                vCPUs of a sandbox whose create names none [EMBERD_VCPUS] (default 1)
  --memory MIB             its memory in MiB [EMBERD_MEMORY_MIB] (default 256)
  --max-vcpus N            the most vcpus a create may ask [EMBERD_MAX_VCPUS] (default: CPU count)
  --max-memory MIB         the most memory_mib a create may ask [EMBERD_MAX_MEMORY_MIB] (default 8192)
  --disk MIB               the writable disk (a RAM-backed tmpfs) of a sandbox whose create names none
                           [EMBERD_DISK_MIB] (default: the guest's, 256)
  --max-disk MIB           the most disk_mib a create may ask [EMBERD_MAX_DISK_MIB] (default 8192)
  --pids-max N             processes+threads a sandbox's execs may have when its create names none
                           [EMBERD_PIDS_MAX] (default: the guest's ceiling, about 1400 at 256 MiB)
  --snapshot-shapes LIST   shapes besides the default that get golden snapshots too, e.g. 2x512,4x2048
                           (VCPUSxMIB) [EMBERD_SNAPSHOT_SHAPES]; other shapes cold-boot
  --sandbox-timeout S      a sandbox's life when its create names none [EMBERD_SANDBOX_TIMEOUT_S]
                           (default 3600; 0: no deadline, only with --max-sandbox-timeout 0)
  --max-sandbox-timeout S  the longest timeout_s a create may ask [EMBERD_MAX_SANDBOX_TIMEOUT_S]
                           (default 86400; 0: no limit, and timeout_s 0 allowed)
  --max-concurrent-boots N VMs that boot at once; more creates wait in line [EMBERD_MAX_CONCURRENT_BOOTS]
                           (default: the host's CPU count)
  --boot-queue-timeout MS  how long a create waits in that line before 503 TOO_BUSY
                           [EMBERD_BOOT_QUEUE_TIMEOUT_MS] (default 60000)
  --memory-reserve MIB     host memory (MemAvailable) a create must leave free, else 503 HOST_MEMORY_LOW
                           [EMBERD_MEMORY_RESERVE_MIB] (default 256)
  --boot-timeout MS        deadline for a guest to answer [EMBERD_BOOT_TIMEOUT_MS] (default 60000)
  --max-sandboxes N        live sandboxes at once [EMBERD_MAX_SANDBOXES] (default 32)
  --max-body BYTES         largest request body [EMBERD_MAX_BODY] (default 2097152)
  --max-upload BYTES       largest file or tar upload [EMBERD_MAX_UPLOAD] (default 1073741824)
  --exec-timeout MS        default exec timeout [EMBERD_EXEC_TIMEOUT_MS] (default 60000)
  --exec-max-timeout MS    largest timeout_ms accepted [EMBERD_EXEC_MAX_TIMEOUT_MS] (default 3600000)
  --exec-output-cap BYTES  stdout+stderr kept per exec [EMBERD_EXEC_OUTPUT_CAP] (default 8388608)
  --default-pack NAME      pack used when a create names none [EMBERD_DEFAULT_PACK] (default python)
  --snapshots on|off       restore sandboxes from a golden snapshot per pack [EMBERD_SNAPSHOTS] (default on)
  --pool-size N            ready sandboxes kept per pack at least, whatever the demand [EMBERD_POOL_SIZE] (default 1)
  --pool-max N             ready sandboxes kept per pack and machine shape at most: the pool grows to the
                           creates of the last 30 s within these bounds [EMBERD_POOL_MAX] (default 8,
                           never below --pool-size; with --pool-size 0 the default is 0: no pool)
  --auth auto|on|off       require Authorization: Bearer <token> [EMBERD_AUTH] (default auto: off on a
                           loopback address, on anywhere else; off is refused beyond loopback)
  --auth-token-file PATH   the token, created (mode 0600) on first use [EMBERD_AUTH_TOKEN_FILE]
                           (default STATE_DIR/token)
  --egress-dns HOST[:PORT] the DNS server the resolver of sandboxes with "network" asks for allowed names
                           [EMBERD_EGRESS_DNS] (default: the first nameserver of /etc/resolv.conf)
  --egress-rate-mbit N     bandwidth each way of a sandbox with "network" whose create names none
                           [EMBERD_EGRESS_RATE_MBIT] (default: unlimited)
  --state-dir DIR          state that outlives the daemon [EMBERD_STATE_DIR] (default /var/lib/emberd
                           as root, else $XDG_STATE_HOME/emberd); paused sandboxes go in STATE_DIR/paused
  --paused-retention S     seconds a paused sandbox is kept, then deleted [EMBERD_PAUSED_RETENTION_S]
                           (default 604800: 7 days; 0: until deleted)
  --paused-disk-max MIB    disk the paused sandboxes may take together; a pause beyond it is refused
                           [EMBERD_PAUSED_DISK_MAX_MIB] (default 20480; 0: no limit)
  --on-shutdown destroy|pause  what SIGTERM/SIGINT does with running sandboxes [EMBERD_ON_SHUTDOWN]
                           (default destroy; pause: the next daemon lists them paused)
  --log-level LEVEL        fatal, error, warn, info, debug, trace or silent [EMBERD_LOG_LEVEL] (default info);
                           JSON lines on stderr, one readable line each when stderr is a terminal
  EMBERD_MCP_ALLOWED_HOSTS host names (comma-separated) the /mcp endpoint accepts in Host and Origin besides
                           loopback (DNS rebinding protection; environment only)
  -h, --help               this text`;

export class ConfigError extends Error {}


export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): DaemonConfig | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      addr: { type: 'string' },
      'images-dir': { type: 'string' },
      'run-dir': { type: 'string' },
      backend: { type: 'string' },
      qemu: { type: 'string' },
      'qemu-confine': { type: 'string' },
      'shared-memory': { type: 'string' },
      'qemu-uid': { type: 'string' },
      'qemu-gid': { type: 'string' },
      firecracker: { type: 'string' },
      jailer: { type: 'string' },
      'jailer-base': { type: 'string' },
      'jailer-uid': { type: 'string' },
      'jailer-gid': { type: 'string' },
      vcpus: { type: 'string' },
      memory: { type: 'string' },
      'boot-timeout': { type: 'string' },
      'max-sandboxes': { type: 'string' },
      'max-body': { type: 'string' },
      'max-upload': { type: 'string' },
      'exec-timeout': { type: 'string' },
      'exec-max-timeout': { type: 'string' },
      'exec-output-cap': { type: 'string' },
      'default-pack': { type: 'string' },
      snapshots: { type: 'string' },
      'pool-size': { type: 'string' },
      'pool-max': { type: 'string' },
      'log-level': { type: 'string' },
      'sandbox-timeout': { type: 'string' },
      'max-vcpus': { type: 'string' },
      disk: { type: 'string' },
      'max-disk': { type: 'string' },
      'pids-max': { type: 'string' },
      'max-memory': { type: 'string' },
      'snapshot-shapes': { type: 'string' },
      'max-concurrent-boots': { type: 'string' },
      'boot-queue-timeout': { type: 'string' },
      'memory-reserve': { type: 'string' },
      'max-sandbox-timeout': { type: 'string' },
      auth: { type: 'string' },
      'auth-token-file': { type: 'string' },
      'state-dir': { type: 'string' },
      'paused-retention': { type: 'string' },
      'paused-disk-max': { type: 'string' },
      'on-shutdown': { type: 'string' },
      'egress-dns': { type: 'string' },
      'egress-rate-mbit': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (positionals.length) throw new ConfigError(`unexpected argument "${positionals[0]}"`);
  const pick = (flag: keyof typeof values, envName: string, def: string): string => (values[flag] as string | undefined) ?? env[envName] ?? def;
  const int = (flag: keyof typeof values, envName: string, def: number, min: number, max: number): number => {
    const raw = pick(flag, envName, String(def));
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`--${String(flag)} (${envName}) must be an integer from ${min} to ${max}, got "${raw}"`);
    return n;
  };
  const { host, port } = parseAddr(pick('addr', 'EMBERD_ADDR', '127.0.0.1:7777'));
  const backend = pick('backend', 'EMBERD_BACKEND', 'auto');
  if (!['auto', 'qemu', 'firecracker'].includes(backend)) throw new ConfigError(`--backend must be auto, qemu or firecracker, got "${backend}"`);
  const qemuConfine = pick('qemu-confine', 'EMBERD_QEMU_CONFINE', 'auto');
  if (qemuConfine !== 'auto' && qemuConfine !== 'off') throw new ConfigError(`--qemu-confine must be auto or off, got "${qemuConfine}"`);
  const sharedMemory = pick('shared-memory', 'EMBERD_SHARED_MEMORY', 'auto');
  if (!['auto', 'on', 'off'].includes(sharedMemory)) throw new ConfigError(`--shared-memory must be auto, on or off, got "${sharedMemory}"`);
  if (pick('jailer', 'EMBERD_JAILER', 'auto') === '') throw new ConfigError('--jailer must be auto, off or the path of a jailer binary');
  if (!pick('jailer-base', 'EMBERD_JAILER_BASE', '/srv/jailer').startsWith('/')) throw new ConfigError('--jailer-base must be an absolute path');
  const execMax = int('exec-max-timeout', 'EMBERD_EXEC_MAX_TIMEOUT_MS', 3_600_000, 1, 86_400_000);
  const logLevel = pick('log-level', 'EMBERD_LOG_LEVEL', 'info');
  const poolSize = int('pool-size', 'EMBERD_POOL_SIZE', 1, 0, 64);
  const maxVcpus = int('max-vcpus', 'EMBERD_MAX_VCPUS', Math.min(availableParallelism(), 32), 1, 64);
  const maxMemoryMib = int('max-memory', 'EMBERD_MAX_MEMORY_MIB', 8192, MIN_MEMORY_MIB, 1 << 20);
  const machine = { vcpus: int('vcpus', 'EMBERD_VCPUS', 1, 1, maxVcpus), memoryMib: int('memory', 'EMBERD_MEMORY_MIB', 256, MIN_MEMORY_MIB, maxMemoryMib) };
  const maxDiskMib = int('max-disk', 'EMBERD_MAX_DISK_MIB', 8192, 16, 1 << 20);
  /** An integer flag without a default: undefined leaves the value to the guest. */
  const optionalInt = (flag: keyof typeof values, envName: string, min: number, max: number): number | undefined =>
    (values[flag] ?? env[envName]) === undefined ? undefined : int(flag, envName, 0, min, max);
  const snapshotShapes = parseShapes(pick('snapshot-shapes', 'EMBERD_SNAPSHOT_SHAPES', ''), maxVcpus, maxMemoryMib);
  const maxSandboxTimeout = int('max-sandbox-timeout', 'EMBERD_MAX_SANDBOX_TIMEOUT_S', 86_400, 0, LONGEST_TIMEOUT_S);
  const sandboxTimeout = int('sandbox-timeout', 'EMBERD_SANDBOX_TIMEOUT_S', 3600, 0, LONGEST_TIMEOUT_S);
  if (maxSandboxTimeout && (sandboxTimeout > maxSandboxTimeout || sandboxTimeout === 0)) {
    throw new ConfigError(`--sandbox-timeout ${sandboxTimeout} must be from 1 to --max-sandbox-timeout (${maxSandboxTimeout}); 0 (no deadline) needs --max-sandbox-timeout 0`);
  }
  const stateDir = pick('state-dir', 'EMBERD_STATE_DIR', '') || defaultStateDir(env);
  const authMode = pick('auth', 'EMBERD_AUTH', 'auto');
  if (!['auto', 'on', 'off'].includes(authMode)) throw new ConfigError(`--auth must be auto, on or off, got "${authMode}"`);
  if (authMode === 'off' && !isLoopback(host)) {
    throw new ConfigError(`--auth off is refused on ${host}: anyone who reaches that address could run code on this host; use --auth on (the default there), or listen on 127.0.0.1`);
  }
  const onShutdown = pick('on-shutdown', 'EMBERD_ON_SHUTDOWN', 'destroy');
  if (onShutdown !== 'destroy' && onShutdown !== 'pause') throw new ConfigError(`--on-shutdown must be destroy or pause, got "${onShutdown}"`);
  const egressDnsRaw = pick('egress-dns', 'EMBERD_EGRESS_DNS', '');
  const egressDns = egressDnsRaw ? parseUpstream(egressDnsRaw) : systemUpstream();
  if (egressDnsRaw && !egressDns) throw new ConfigError(`--egress-dns must be an IPv4 address with an optional port (such as 127.0.0.1:5353), got "${egressDnsRaw}"`);
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  return {
    listen: { host, port },
    imagesDir: pick('images-dir', 'EMBERD_IMAGES_DIR', '') || undefined,
    runDir: pick('run-dir', 'EMBERD_RUN_DIR', defaultRunBase()),
    vmm: {
      backend: backend as VmmOptions['backend'],
      qemu: pick('qemu', 'EMBERD_QEMU', '') || undefined,
      qemuConfine,
      sharedMemory: sharedMemory as VmmOptions['sharedMemory'],
      // Not 0: QEMU as root is what confinement is there to prevent.
      qemuUid: int('qemu-uid', 'EMBERD_QEMU_UID', 65534, 1, 4294967294),
      qemuGid: int('qemu-gid', 'EMBERD_QEMU_GID', 65534, 1, 4294967294),
      firecracker: pick('firecracker', 'EMBERD_FIRECRACKER', '') || undefined,
      jailer: pick('jailer', 'EMBERD_JAILER', 'auto'),
      jailerBase: pick('jailer-base', 'EMBERD_JAILER_BASE', '/srv/jailer'),
      jailerUid: int('jailer-uid', 'EMBERD_JAILER_UID', 65534, 0, 4294967294),
      jailerGid: int('jailer-gid', 'EMBERD_JAILER_GID', 65534, 0, 4294967294),
    },
    sandboxes: {
      defaultPack: pick('default-pack', 'EMBERD_DEFAULT_PACK', 'python'),
      machine,
      maxVcpus,
      maxMemoryMib,
      maxDiskMib,
      diskMib: optionalInt('disk', 'EMBERD_DISK_MIB', 16, maxDiskMib),
      pidsMax: optionalInt('pids-max', 'EMBERD_PIDS_MAX', 0, 1 << 22),
      bootTimeoutMs: int('boot-timeout', 'EMBERD_BOOT_TIMEOUT_MS', 60_000, 1000, 600_000),
      max: int('max-sandboxes', 'EMBERD_MAX_SANDBOXES', 32, 1, 4096),
      poolSize,
      poolMax: Math.max(poolSize, int('pool-max', 'EMBERD_POOL_MAX', poolSize ? 8 : 0, 0, 256)),
      timeoutS: sandboxTimeout,
      maxTimeoutS: maxSandboxTimeout,
    },
    admission: {
      maxConcurrentBoots: int('max-concurrent-boots', 'EMBERD_MAX_CONCURRENT_BOOTS', availableParallelism(), 1, 256),
      queueTimeoutMs: int('boot-queue-timeout', 'EMBERD_BOOT_QUEUE_TIMEOUT_MS', 60_000, 0, 3_600_000),
      memoryReserveMib: int('memory-reserve', 'EMBERD_MEMORY_RESERVE_MIB', 256, 0, 1 << 24),
    },
    exec: {
      defaultTimeoutMs: int('exec-timeout', 'EMBERD_EXEC_TIMEOUT_MS', 60_000, 1, execMax),
      maxTimeoutMs: execMax,
      outputCap: int('exec-output-cap', 'EMBERD_EXEC_OUTPUT_CAP', 8 * 1024 * 1024, 1, 1 << 30),
    },
    http: {
      maxBody: int('max-body', 'EMBERD_MAX_BODY', 2 * 1024 * 1024, 1024, 1 << 30),
      maxUpload: int('max-upload', 'EMBERD_MAX_UPLOAD', 1 << 30, 1, 2 ** 40),
    },
    snapshots: onOff(pick('snapshots', 'EMBERD_SNAPSHOTS', 'on'), '--snapshots'),
    snapshotShapes,
    logLevel: logLevel as LogLevel,
    stateDir,
    auth: {
      enabled: authMode === 'on' || (authMode === 'auto' && !isLoopback(host)),
      tokenFile: pick('auth-token-file', 'EMBERD_AUTH_TOKEN_FILE', '') || join(stateDir, 'token'),
    },
    paused: {
      dir: join(stateDir, 'paused'),
      retentionS: int('paused-retention', 'EMBERD_PAUSED_RETENTION_S', 604_800, 0, 100 * 365 * 86_400),
      diskMaxMib: int('paused-disk-max', 'EMBERD_PAUSED_DISK_MAX_MIB', 20_480, 0, 1 << 30),
    },
    onShutdown,
    egress: { dns: egressDns, rateMbit: optionalInt('egress-rate-mbit', 'EMBERD_EGRESS_RATE_MBIT', 1, 100_000) },
  };
}

/** "2x512,4x2048" -> machine shapes, each within the bounds. */
function parseShapes(list: string, maxVcpus: number, maxMemoryMib: number): MachineConfig[] {
  return list.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const m = /^(\d+)x(\d+)$/.exec(s);
    const shape = m ? { vcpus: Number(m[1]), memoryMib: Number(m[2]) } : undefined;
    if (!shape || shape.vcpus < 1 || shape.vcpus > maxVcpus || shape.memoryMib < MIN_MEMORY_MIB || shape.memoryMib > maxMemoryMib) {
      throw new ConfigError(`--snapshot-shapes: "${s}" is not VCPUSxMIB within --max-vcpus ${maxVcpus} and ${MIN_MEMORY_MIB}..--max-memory ${maxMemoryMib}, e.g. 2x512`);
    }
    return shape;
  });
}

function onOff(v: string, flag: string): boolean {
  if (v === 'on' || v === 'true' || v === '1') return true;
  if (v === 'off' || v === 'false' || v === '0') return false;
  throw new ConfigError(`${flag} must be on or off, got "${v}"`);
}

export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`--addr must be HOST:PORT such as 127.0.0.1:7777, got "${addr}"`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}
