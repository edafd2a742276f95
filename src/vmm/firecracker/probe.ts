// Finding the Firecracker binary and asking it what it is: its release (`--version`, which must be
// a supported one), whether it is emberd's test double, and its snapshot data format
// (`--snapshot-version`). Everything here runs the binary, never a VM.
import { accessSync, constants as fsc } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { delimiter, join } from 'node:path';
import { FirecrackerError } from './errors.ts';
import { requireSupportedVersion, SUPPORTED_TEXT, type FcVersion } from './version.ts';

/** Printed by test/firecracker-double on --version after Firecracker's own line. */
export const DOUBLE_MARKER = 'emberd-firecracker-double';

export interface FirecrackerProbe {
  binary: string;
  version: FcVersion;
  /** the binary is emberd's API test double (QEMU underneath), not Firecracker */
  isDouble: boolean;
}

const DEFAULT_DIRS = ['/usr/local/bin', '/usr/bin'];

/** Finds an executable by explicit path, else on PATH, else in /usr/local/bin and /usr/bin. */
export function findExecutable(name: string, explicit?: string): string | undefined {
  const candidates = explicit ? [explicit] : [...(process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, name)), ...DEFAULT_DIRS.map((d) => join(d, name))];
  return candidates.find((c) => { try { accessSync(c, fsc.X_OK); return true; } catch { return false; } });
}

/** Locates the binary and asks it `--version`; throws FIRECRACKER_NOT_FOUND / _UNSUPPORTED_VERSION. */
export function probeFirecracker(explicit?: string): FirecrackerProbe {
  const binary = findExecutable('firecracker', explicit);
  if (!binary) {
    throw new FirecrackerError('FIRECRACKER_NOT_FOUND', explicit
      ? `${explicit} is not an executable file; pass the path of a Firecracker ${SUPPORTED_TEXT} binary with --firecracker`
      : `no firecracker binary on PATH or in ${DEFAULT_DIRS.join(', ')}; install Firecracker ${SUPPORTED_TEXT} (see docs/firecracker.md) or pass --firecracker PATH`);
  }
  let out: string;
  try {
    out = execFileSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new FirecrackerError('FIRECRACKER_NOT_FOUND', `${binary} --version failed: ${(e as Error).message}`, { cause: e });
  }
  const version = requireSupportedVersion(out.split('\n')[0] ?? '', binary);
  return { binary, version, isDouble: out.includes(DOUBLE_MARKER) };
}

/** `<binary> --snapshot-version` (the state file format, e.g. `9.0.0`), or why it gave none. */
export function probeSnapshotFormat(binary: string): string | { error: string } {
  try {
    const out = execFileSync(binary, ['--snapshot-version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return /^v?(\d+\.\d+\.\d+)\s*$/.exec(out.trim())?.[1] ?? { error: `it printed ${JSON.stringify(out.trim().slice(0, 80))}` };
  } catch (e) {
    return { error: (e as Error).message };
  }
}
