#!/usr/bin/env node
// emberd: the daemon. main() is the design: configuration -> logs -> images -> VMM backend ->
// sandbox manager -> HTTP API, and on SIGINT/SIGTERM the reverse, leaving no VM behind.
import { writeFileSync, rmSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, parseConfig, USAGE, type DaemonConfig } from './config.ts';
import { buildHttpServer } from './http/server.ts';
import { createLogger, type Logger } from '../log.ts';
import { loadOrCreateToken } from './auth.ts';
import { SandboxManager } from '../sandbox/manager.ts';
import { prepareRunBase } from '../sandbox/run-dir.ts';
import { selectBackend } from '../vmm/select.ts';
import { QemuBackend } from '../vmm/qemu/qemu-backend.ts';
import { FirecrackerBackend } from '../vmm/firecracker/firecracker-backend.ts';
import { Egress } from '../sandbox/egress/egress.ts';
import { INITRAMFS_REL, VMLINUX_REL, loadImageSet, type ImageSet } from '../images/manifest.ts';
import { goldenName, type SnapshotInputs } from '../sandbox/snapshots.ts';
import type { Backend, MachineConfig } from '../vmm/backend.ts';
import { runImagesCommand } from '../images/cli.ts';
import { runPacksCommand } from '../images/packs-cli.ts';
import { runMcpCommand } from '../mcp/cli.ts';
import { watchPacks } from './pack-watch.ts';
import { DaemonMetrics } from './metrics.ts';
import { VERSION } from '../version.ts';

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'images') return runImagesCommand(argv.slice(1));
  if (argv[0] === 'packs') return runPacksCommand(argv.slice(1));
  if (argv[0] === 'mcp') return runMcpCommand(argv.slice(1));

  const cfg = parseConfig(argv);
  if (cfg === 'help') { console.log(USAGE); return 0; }
  const log = createLogger({ level: cfg.logLevel });

  const images = loadImageSet(cfg.imagesDir);
  if (!images.packs.has(cfg.sandboxes.defaultPack)) {
    throw new ConfigError(`default pack "${cfg.sandboxes.defaultPack}" is not built; built packs: ${[...images.packs.keys()].join(', ')}`);
  }
  for (const b of images.brokenPacks) log.warn({ pack: b.name }, `pack ${b.name} cannot be used: ${b.error}`);
  const vmmLog = log.child({ component: 'vmm' });
  const backend = selectBackend({ ...cfg.vmm, log: (msg) => vmmLog.warn(msg) });
  log.info({ backend: backend.info.name, version: backend.info.version, accel: backend.info.accel }, `backend ${backend.info.name} ${backend.info.version} (${backend.info.accel}): ${backend.info.reason}`);
  for (const w of backend.info.warnings) log.warn(w);

  claimRunDir(cfg.runDir, log);
  const auth = cfg.auth.enabled ? { ...loadOrCreateToken(cfg.auth.tokenFile), tokenFile: cfg.auth.tokenFile } : undefined;
  if (auth) log.info({ token_file: auth.tokenFile }, `auth on: requests need the bearer token in ${auth.tokenFile}${auth.created ? ' (created now)' : ''}`);
  else log.info('auth off: any process on this host can use this daemon (it listens on loopback only); --auth on requires a token');
  const metrics = new DaemonMetrics();
  const egress = new Egress({ runBase: cfg.runDir, ...vmmIdentity(backend, cfg), upstream: cfg.egress.dns, defaultRateMbit: cfg.egress.rateMbit, log: log.child({ component: 'egress' }) });
  const staleNet = await egress.cleanStale();
  if (staleNet.length) log.info({ removed: staleNet }, `removed ${staleNet.length} network namespaces, veths and tables a previous emberd left`);
  const manager = new SandboxManager({
    backend,
    images,
    runBase: cfg.runDir,
    sandboxes: cfg.sandboxes,
    admission: cfg.admission,
    exec: cfg.exec,
    maxUploadBytes: cfg.http.maxUpload,
    snapshots: cfg.snapshots ? { dir: join(images.dir, 'snapshots'), goldens: goldens(images, backend, cfg) } : undefined,
    observer: metrics,
    paused: cfg.paused,
    onShutdown: cfg.onShutdown,
    egress,
    log,
  });

  const http = buildHttpServer(manager, {
    bodyLimit: cfg.http.maxBody,
    log,
    auth,
    metrics,
    info: () => ({
      name: 'emberd',
      version: VERSION,
      api_version: 1,
      backend: backend.info,
      language_packs: manager.packNames(),
      default_language_pack: cfg.sandboxes.defaultPack,
      sandboxes: { live: manager.list().length, limit: cfg.sandboxes.max },
      machine: { vcpus: cfg.sandboxes.machine.vcpus, memory_mib: cfg.sandboxes.machine.memoryMib },
      ...manager.status(),
    }),
  });
  await http.listen({ ...cfg.listen, listenTextResolver: (address) => `listening on ${address}` });
  manager.start(); // golden snapshots and the warm pool fill in the background

  const packs = watchPacks(images.dir, (now) => {
    const { added, removed, changed } = manager.updatePacks(now.packs, now.brokenPacks, goldens(now, backend, cfg));
    if (added.length || removed.length || changed.length) log.info({ added, removed, changed }, `packs: ${[...now.packs.keys()].join(', ')}`);
    for (const b of now.brokenPacks) log.warn({ pack: b.name }, `pack ${b.name} cannot be used: ${b.error}`);
  }, log);

  const signal = await stopSignal();
  packs.close();
  log.info({ signal }, 'shutting down: destroying every sandbox');
  await Promise.all([http.close(), manager.shutdown()]);
  releaseRunDir(cfg.runDir);
  log.info('stopped');
  return 0;
}

/**
 * The golden snapshots: every pack in the default shape and in each --snapshot-shapes shape, with
 * what each depends on (any change gives it a new key, and a rebuild).
 */
function goldens(images: ImageSet, backend: Backend, cfg: DaemonConfig): Map<string, { pack: string; machine: MachineConfig; inputs: SnapshotInputs }> {
  const sha = (rel: string) => images.manifest.files[rel]?.sha256 ?? 'unknown';
  const out = new Map<string, { pack: string; machine: MachineConfig; inputs: SnapshotInputs }>();
  for (const machine of [cfg.sandboxes.machine, ...cfg.snapshotShapes]) {
    for (const p of images.packs.values()) {
      out.set(goldenName(p.name, machine, cfg.sandboxes.machine), {
        pack: p.name,
        machine,
        inputs: { vmm: backend.snapshots?.fingerprint ?? backend.name, kernelSha256: sha(VMLINUX_REL), initramfsSha256: sha(INITRAMFS_REL), packSha256: p.sha256, machine },
      });
    }
  }
  return out;
}

/** The uid/gid the VMM runs as (a sandbox's tap is created owned by it). */
function vmmIdentity(backend: Backend, cfg: DaemonConfig): { vmmUid: number; vmmGid: number } {
  if (backend instanceof QemuBackend) {
    const drop = backend.confinement.drop;
    return { vmmUid: drop?.uid ?? process.getuid?.() ?? 0, vmmGid: drop?.gid ?? process.getgid?.() ?? 0 };
  }
  if (backend instanceof FirecrackerBackend) return { vmmUid: backend.vmmUser.uid, vmmGid: backend.vmmUser.gid };
  return { vmmUid: cfg.vmm.jailerUid ?? 0, vmmGid: cfg.vmm.jailerGid ?? 0 };
}

function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (s: NodeJS.Signals) => resolve(s);
    process.once('SIGINT', on);
    process.once('SIGTERM', on);
  });
}

/** One daemon per run dir: a live pid file means another emberd owns it. */
function claimRunDir(dir: string, log: Logger): void {
  const pidFile = join(dir, 'emberd.pid');
  try {
    const pid = Number(readFileSync(pidFile, 'utf8'));
    if (pid && pid !== process.pid && isAlive(pid)) {
      throw new ConfigError(`another emberd (pid ${pid}) is using run dir ${dir}; stop it or pass a different --run-dir`);
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
  }
  const removed = prepareRunBase(dir);
  if (removed) log.info({ removed }, `removed ${removed} stale sandbox directories from ${dir}`);
  writeFileSync(pidFile, String(process.pid));
}

function releaseRunDir(dir: string): void {
  rmSync(join(dir, 'emberd.pid'), { force: true });
}

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    // Before the logger exists (bad flags) and for fatal errors alike: plain words on stderr.
    const err = e as Error & { code?: string };
    process.stderr.write(`emberd: ${err instanceof ConfigError || err.code ? '' : 'fatal: '}${err.message}\n`);
    if (err instanceof ConfigError) process.stderr.write(`run \`emberd --help\` for the options\n`);
    process.exit(err instanceof ConfigError ? 2 : 1);
  },
);
