// The Firecracker backend: one `firecracker --api-sock` process per VM (optionally under the
// jailer), configured over its API, reached through hybrid vsock. It composes the driver's parts:
// probe.ts (the binary), start.ts (the start sequence, over process.ts), vm.ts (the VmHandle) and
// snapshot.ts (golden snapshots); what it keeps itself is what it says about itself (`info`) and
// the one-time reaping of a predecessor's jails.
import { dirname } from 'node:path';
import type { Backend, BackendInfo, BootSpec, VmHandle } from '../backend.ts';
import { hostCgroupV2, jailTag, reapStaleJails, type CgroupV2Info, type JailerOptions } from './jailer.ts';
import { probeFirecracker, type FirecrackerProbe } from './probe.ts';
import { FirecrackerSnapshots } from './snapshot.ts';
import { coldBoot, startVm, type StartOptions } from './start.ts';

// Until src/vmm/select.ts (and its test) import them from probe.ts, their home.
export { findExecutable, probeFirecracker, type FirecrackerProbe } from './probe.ts';

export interface FirecrackerBackendOptions {
  /** firecracker binary (or the test double); default: PATH, /usr/local/bin, /usr/bin */
  binary?: string;
  /** run every VM under the jailer with these options */
  jailer?: JailerOptions;
  /** also PUT /logger and /metrics with files next to the sockets (default: logs go to stdout, kept in the console tail) */
  logFiles?: boolean;
  /** per API request (default 10 s, never past the boot deadline) */
  apiTimeoutMs?: number;
  /** how long stop() waits after SendCtrlAltDel before SIGKILL (default 1500 ms) */
  ctrlAltDelWaitMs?: number;
  /** shown in GET / (why this backend was chosen) */
  reason?: string;
  warnings?: string[];
  log?: (msg: string) => void;
}

export class FirecrackerBackend implements Backend {
  readonly name = 'firecracker' as const;
  readonly info: BackendInfo;
  /**
   * A sandbox's network: Firecracker runs in its netns (the jailer's --netns, else nsenter) and
   * gets PUT /network-interfaces/eth0 on the netns's tap before InstanceStart (docs/network.md).
   */
  readonly network = true;
  /** The uid/gid Firecracker runs as (the jail's, else emberd's own): a sandbox's tap is made owned by it. */
  readonly vmmUser: { uid: number; gid: number };
  /** Golden snapshots: docs/snapshots.md "Firecracker". */
  readonly snapshots: FirecrackerSnapshots;
  private readonly probe: FirecrackerProbe;
  private readonly o: FirecrackerBackendOptions;
  private readonly cgroup: CgroupV2Info | undefined;
  private readonly starting: StartOptions;
  private reaped: Promise<void> | undefined;

  constructor(o: FirecrackerBackendOptions = {}, probe?: FirecrackerProbe) {
    this.o = o;
    this.probe = probe ?? probeFirecracker(o.binary);
    this.cgroup = o.jailer ? hostCgroupV2() : undefined;
    const warnings = [...(o.warnings ?? [])];
    if (this.probe.isDouble) {
      warnings.push(`${this.probe.binary} is emberd's Firecracker API test double: every API request is checked against Firecracker's spec, but guests run under QEMU -M microvm (software emulation), not Firecracker/KVM.`);
    }
    if (o.jailer && !this.cgroup?.controllers.size) warnings.push('the jailer runs without cgroup limits: no cgroup v2 hierarchy with cpu/memory/pids controllers was found');
    this.info = {
      name: 'firecracker',
      binary: this.probe.binary,
      version: this.probe.version.text,
      accel: this.probe.isDouble ? 'tcg (test double)' : 'kvm',
      reason: [o.reason ?? '--backend firecracker', o.jailer ? `jailer ${o.jailer.binary} (chroot base ${o.jailer.chrootBase}, uid ${o.jailer.uid}, gid ${o.jailer.gid})` : 'no jailer'].join('; '),
      warnings,
    };
    const jail = o.jailer;
    this.vmmUser = jail ? { uid: jail.uid, gid: jail.gid } : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    this.starting = {
      probe: this.probe,
      jailer: jail,
      cgroup: this.cgroup,
      logFiles: o.logFiles,
      apiTimeoutMs: o.apiTimeoutMs,
      ctrlAltDelWaitMs: o.ctrlAltDelWaitMs,
      log: o.log,
      beforeStart: jail ? (spec) => (this.reaped ??= this.reapStale(jail, dirname(spec.runDir))) : undefined,
    };
    this.snapshots = new FirecrackerSnapshots({
      probe: this.probe,
      accel: this.info.accel,
      jailer: jail,
      start: (spec, configure, snapDir) => startVm(spec, this.starting, configure, snapDir),
    });
  }

  boot(spec: BootSpec): Promise<VmHandle> {
    return startVm(spec, this.starting, coldBoot(spec));
  }

  private async reapStale(jail: JailerOptions, runBase: string): Promise<void> {
    const n = await reapStaleJails(jail, this.probe.binary.split('/').pop()!, jailTag(runBase), this.cgroup, this.o.log).catch(() => 0);
    if (n) this.o.log?.(`removed ${n} stale jail(s) under ${jail.chrootBase}`);
  }
}
