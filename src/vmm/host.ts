// Facts about the host that decide how VMs run: KVM usability, the TSC frequency for TCG guests.
import { closeSync, openSync, readFileSync, constants } from 'node:fs';

export interface KvmStatus { usable: boolean; reason: string }

/**
 * /dev/kvm can exist and open while the CPU has no virtualisation extensions (nested hosts
 * without nested virt): guests then hang. Usable means the device opens read-write AND the CPU
 * advertises vmx or svm. EMBERD_ACCEL=tcg|kvm overrides the probe.
 */
export function probeKvm(): KvmStatus {
  const forced = process.env.EMBERD_ACCEL;
  if (forced === 'tcg') return { usable: false, reason: 'EMBERD_ACCEL=tcg' };
  if (forced === 'kvm') return { usable: true, reason: 'EMBERD_ACCEL=kvm' };
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
  } catch (e) {
    return { usable: false, reason: `/dev/kvm is not usable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  const flags = readCpuFlags();
  if (!flags.has('vmx') && !flags.has('svm')) {
    return { usable: false, reason: '/dev/kvm opens but the CPU advertises neither vmx nor svm (nested virtualisation is off)' };
  }
  return { usable: true, reason: '/dev/kvm is read-writable and the CPU has hardware virtualisation' };
}

function readCpuFlags(): Set<string> {
  try {
    const m = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return new Set(m?.[1]?.split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

/** Host TSC in kHz, for `tsc_early_khz=`: without it about 1 in 4 TCG boots hang after "Marking TSC unstable". */
export function hostTscKhz(): number | undefined {
  try {
    const m = /^cpu MHz\s*:\s*([\d.]+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return m ? Math.round(Number(m[1]) * 1000) : undefined;
  } catch {
    return undefined;
  }
}
