// Starting one Firecracker VM, the same way for a cold boot and for a snapshot's clone: lay it out
// -> spawn (directly or jailed) -> wait for the API socket -> GET /version (refuse unsupported) ->
// the configuration step (a cold boot's requests + InstanceStart, or a snapshot load) -> CONNECT
// 1024 over the vsock UDS, retried until the guest agent listens or the deadline passes. Any failure
// on the way stops the VM and removes its files; a Firecracker that dies meanwhile is
// FIRECRACKER_EXITED with its console (and log) tail.
import { mkdirSync } from 'node:fs';
import type { BootSpec } from '../backend.ts';
import { connectHybridVsock, connectUnix } from '../../agent/connect.ts';
import { isEmberdError } from '../../errors.ts';
import { FirecrackerApiClient } from './api-client.ts';
import type { ApiRequest } from './api-spec.ts';
import { AGENT_VSOCK_PORT, bootRequests, INSTANCE_START } from './boot-config.ts';
import { FirecrackerError, isFirecrackerError } from './errors.ts';
import type { CgroupV2Info, JailerOptions } from './jailer.ts';
import type { FirecrackerProbe } from './probe.ts';
import { launchFirecracker, logTail, placeVm, type FcPlacement } from './process.ts';
import { requireSupportedVersion, type FcVersion } from './version.ts';
import { FirecrackerVm } from './vm.ts';

export interface StartOptions {
  probe: FirecrackerProbe;
  jailer?: JailerOptions;
  cgroup?: CgroupV2Info;
  logFiles?: boolean;
  /** per API request (default 10 s, never past the boot deadline) */
  apiTimeoutMs?: number;
  /** how long stop() waits after SendCtrlAltDel before SIGKILL (default 1500 ms) */
  ctrlAltDelWaitMs?: number;
  log?: (msg: string) => void;
  /** awaited once the run dir exists, before anything of the VM is laid out */
  beforeStart?: (spec: BootSpec) => Promise<void>;
}

/** What the configuration step gets: a supported API that answers, and the VM being started. */
export interface ConfigureStep {
  client: FirecrackerApiClient;
  /** what GET /version reported */
  version: FcVersion;
  vm: FirecrackerVm;
  place: FcPlacement;
  /** Sends one request within the API timeout (never past the boot deadline); rejects at once if Firecracker dies. */
  send(r: ApiRequest): Promise<void>;
}

export type Configure = (step: ConfigureStep) => Promise<void>;

/** A cold boot's configuration: machine, kernel, pack, vsock (and logger/metrics), then InstanceStart. */
export function coldBoot(spec: BootSpec): Configure {
  return async ({ place, send }) => {
    for (const r of bootRequests(spec, place.guest)) await send(r);
    await send(INSTANCE_START);
  };
}

/** Starts a VM configured by `configure`; `snapDir`: a clone of that snapshot (its files are placed for the load). */
export async function startVm(spec: BootSpec, o: StartOptions, configure: Configure, snapDir?: string): Promise<FirecrackerVm> {
  mkdirSync(spec.runDir, { recursive: true, mode: 0o700 });
  await o.beforeStart?.(spec);
  const place = placeVm(spec, { binary: o.probe.binary, jailer: o.jailer, logFiles: o.logFiles }, snapDir);
  const { host } = place;
  const instance = await launchFirecracker(spec, place, { binary: o.probe.binary, jailer: o.jailer, logFiles: o.logFiles, cgroup: o.cgroup, log: o.log });

  const vm = new FirecrackerVm(instance, o.ctrlAltDelWaitMs ?? 1500);
  const died = vm.exited.then((e) => {
    throw new FirecrackerError('FIRECRACKER_EXITED', `Firecracker exited during ${snapDir ? 'the snapshot load' : 'start'} (${e.reason}): ${instance.proc.console.tail(2000).trim() || 'no output'}${logTail(host.log)}`);
  });
  died.catch(() => {});
  const race = <T>(p: Promise<T>): Promise<T> => Promise.race([p, died]);
  const apiTimeout = () => Math.max(500, Math.min(o.apiTimeoutMs ?? 10_000, spec.deadline - Date.now()));
  try {
    try {
      (await race(connectUnix(host.api, spec.deadline))).destroy();
    } catch (e) {
      if (isEmberdError(e, 'BOOT_TIMEOUT')) throw new FirecrackerError('FIRECRACKER_API_TIMEOUT', `the Firecracker API socket ${host.api} did not accept connections before the boot deadline`, { cause: e });
      throw e;
    }
    const client = new FirecrackerApiClient(host.api, { timeoutMs: o.apiTimeoutMs ?? 10_000 });
    vm.client = client;
    const reported = await race(client.get<{ firecracker_version?: unknown }>('/version', apiTimeout()));
    const version = requireSupportedVersion(String(reported.body?.firecracker_version ?? ''), `the Firecracker API at ${host.api}`);
    const send = async (r: ApiRequest) => { await race(client.request(r.method as 'PUT' | 'PATCH', r.path, r.body, apiTimeout())); };
    await configure({ client, version, vm, place, send });
    vm.started = true;
    // After a load the guest's vsock connections are reset (Firecracker resets the device at
    // snapshot time); its agent listens again and a fresh CONNECT reaches it.
    const control = await race(connectHybridVsock(host.vsock, AGENT_VSOCK_PORT, spec.deadline));
    vm.attach(control);
    return vm;
  } catch (e) {
    await vm.stop(0);
    if (isFirecrackerError(e) && e.fcCode === 'FIRECRACKER_API_ERROR' && host.log) throw new FirecrackerError(e.fcCode, `${e.message.replace(/^\[\w+\] /, '')}${logTail(host.log)}`);
    throw e;
  }
}
