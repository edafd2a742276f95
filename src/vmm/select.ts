// Chooses the VMM backend: --backend, or for "auto" the best one this host can run:
//   Firecracker when /dev/kvm is usable (probeKvm) and a supported firecracker binary is found,
//   else QEMU with KVM when usable, else QEMU with software emulation (TCG).
// The reason is kept in backend.info.reason (printed at start, returned by GET /).
import { dirname, join } from 'node:path';
import type { Backend, BackendName } from './backend.ts';
import { probeKvm, type KvmStatus } from './host.ts';
import { QemuBackend } from './qemu/qemu-backend.ts';
import { FirecrackerBackend } from './firecracker/firecracker-backend.ts';
import { findExecutable, probeFirecracker, type FirecrackerProbe } from './firecracker/probe.ts';
import { FirecrackerError } from './firecracker/errors.ts';
import { PDEATHSIG_WARNING } from './vmm-process.ts';
import type { JailerOptions } from './firecracker/jailer.ts';

/** The daemon's --backend, --qemu*, --firecracker and --jailer* flags. */
export interface VmmOptions {
  backend: BackendName | 'auto';
  qemu?: string;
  /** `auto` (default: confined as far as the host allows, src/vmm/qemu/confinement.ts) or `off` */
  qemuConfine?: 'auto' | 'off';
  /** the uid/gid a confined QEMU runs as when emberd is root (default 65534:65534) */
  qemuUid?: number;
  qemuGid?: number;
  /** QEMU clones from the golden's shared RAM file: auto (where it weakens nothing), on, off */
  sharedMemory?: 'auto' | 'on' | 'off';
  /** firecracker binary (or the test double) */
  firecracker?: string;
  /** `auto` (default: on when root and a jailer binary is found), `off`, or the jailer's path */
  jailer?: string;
  jailerBase?: string;
  jailerUid?: number;
  jailerGid?: number;
}

export interface SelectOptions extends VmmOptions {
  log?: (msg: string) => void;
}

export type Choice =
  | { backend: 'firecracker'; probe: FirecrackerProbe; reason: string }
  | { backend: 'qemu'; reason: string };

/** The auto decision, separated from construction so it can be tested with any inputs. */
export function chooseAuto(kvm: KvmStatus, probe: () => FirecrackerProbe): Choice {
  if (!kvm.usable) return { backend: 'qemu', reason: `auto: ${kvm.reason}; Firecracker needs KVM, so QEMU with software emulation (TCG)` };
  try {
    const p = probe();
    return { backend: 'firecracker', probe: p, reason: `auto: ${kvm.reason} and ${p.binary} is Firecracker ${p.version.text}` };
  } catch (e) {
    const why = e instanceof FirecrackerError ? e.message.replace(/^\[\w+\] /, '') : (e as Error).message;
    return { backend: 'qemu', reason: `auto: KVM is usable but Firecracker is not (${why}), so QEMU with KVM` };
  }
}

/** Whether and how to use the jailer for this Firecracker. Throws only for an explicit, unusable jailer. */
export function resolveJailer(o: SelectOptions, probe: FirecrackerProbe, isRoot: boolean): { jailer?: JailerOptions; note: string } {
  const mode = o.jailer ?? 'auto';
  if (mode === 'off') return { note: 'jailer off (--jailer off)' };
  const opts = (binary: string): JailerOptions => ({
    binary,
    chrootBase: o.jailerBase ?? '/srv/jailer',
    uid: o.jailerUid ?? 65534,
    gid: o.jailerGid ?? 65534,
    newPidNs: true,
  });
  if (mode !== 'auto') {
    const bin = findExecutable('jailer', mode);
    if (!bin) throw new FirecrackerError('FIRECRACKER_NOT_FOUND', `--jailer ${mode} is not an executable file`);
    if (!isRoot) throw new FirecrackerError('FIRECRACKER_JAILER', 'the jailer needs root (it chroots, creates device nodes and cgroups); run emberd as root or pass --jailer off');
    if (probe.isDouble) throw new FirecrackerError('FIRECRACKER_JAILER', `${probe.binary} is the test double, which cannot run inside a jail; pass --jailer off`);
    return { jailer: opts(bin), note: `jailer ${bin}` };
  }
  if (probe.isDouble) return { note: 'jailer off: the test double cannot run inside a jail' };
  if (!isRoot) return { note: 'jailer off: not running as root' };
  const bin = findExecutable('jailer', join(dirname(probe.binary), 'jailer')) ?? findExecutable('jailer');
  if (!bin) return { note: 'jailer off: no jailer binary next to firecracker or on PATH' };
  return { jailer: opts(bin), note: `jailer on (auto): ${bin}` };
}

export function selectBackend(o: SelectOptions, kvm: KvmStatus = probeKvm()): Backend {
  const b = chooseBackend(o, kvm);
  if (PDEATHSIG_WARNING) b.info.warnings.push(PDEATHSIG_WARNING);
  return b;
}

function chooseBackend(o: SelectOptions, kvm: KvmStatus): Backend {
  if (o.backend === 'qemu') return qemu(o);
  if (o.backend === 'firecracker') {
    const probe = probeFirecracker(o.firecracker);
    if (!kvm.usable && !probe.isDouble) {
      throw new FirecrackerError('FIRECRACKER_NOT_FOUND', `Firecracker needs KVM, and ${kvm.reason}; use --backend qemu (or auto) on this host`);
    }
    return firecracker(o, probe, '--backend firecracker');
  }
  const choice = chooseAuto(kvm, () => probeFirecracker(o.firecracker));
  if (choice.backend === 'firecracker') return firecracker(o, choice.probe, choice.reason);
  return withReason(qemu(o), choice.reason);
}

function qemu(o: SelectOptions): QemuBackend {
  return new QemuBackend({ binary: o.qemu, accel: 'auto', confine: { mode: o.qemuConfine, uid: o.qemuUid, gid: o.qemuGid }, sharedMemory: o.sharedMemory });
}

function firecracker(o: SelectOptions, probe: FirecrackerProbe, reason: string): Backend {
  const { jailer, note } = resolveJailer(o, probe, process.getuid?.() === 0);
  const b = new FirecrackerBackend({ binary: probe.binary, jailer, reason, log: o.log }, probe);
  if (!jailer) b.info.warnings.push(`Firecracker runs without its jailer (${note}): no chroot, no uid drop, no cgroup limits, no PID namespace.`);
  return b;
}

/** The same backend object (its snapshot support and all), with the auto-selection reason in its info. */
function withReason(b: Backend, reason: string): Backend {
  b.info.reason = reason.includes(b.info.reason) ? reason : `${reason} (${b.info.reason})`;
  return b;
}
