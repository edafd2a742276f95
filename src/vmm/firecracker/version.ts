// Which Firecracker versions the driver speaks to. The request set it sends is validated against
// the swagger of every version in SPEC_FILES (./api-spec.ts); widening the range means adding that
// version's swagger there and running the driver tests.
import { FirecrackerError } from './errors.ts';

/** Inclusive minor-version range: 1.15.x and 1.16.x. */
export const SUPPORTED_RANGE = { min: [1, 15], max: [1, 16] } as const;
export const SUPPORTED_TEXT = '1.15.x to 1.16.x';

export interface FcVersion { major: number; minor: number; patch: number; text: string }

/** Accepts `1.15.1`, `v1.15.1`, `Firecracker v1.15.1` and pre-release suffixes (`1.16.0-dev`). */
export function parseFirecrackerVersion(s: string): FcVersion | undefined {
  const m = /(?:^|\s|v)(\d+)\.(\d+)\.(\d+)([-+][\w.-]*)?/.exec(s.trim());
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), text: `${m[1]}.${m[2]}.${m[3]}${m[4] ?? ''}` };
}

export function isSupportedVersion(v: FcVersion): boolean {
  const key = v.major * 1000 + v.minor;
  const [lo, hi] = [SUPPORTED_RANGE.min, SUPPORTED_RANGE.max].map(([a, b]) => a * 1000 + b) as [number, number];
  return key >= lo && key <= hi;
}

/** Throws FIRECRACKER_UNSUPPORTED_VERSION unless `raw` names a supported version. */
export function requireSupportedVersion(raw: string, where: string): FcVersion {
  const v = parseFirecrackerVersion(raw);
  if (!v) throw new FirecrackerError('FIRECRACKER_UNSUPPORTED_VERSION', `${where} reported an unreadable version ${JSON.stringify(raw.slice(0, 80))}; emberd supports Firecracker ${SUPPORTED_TEXT}`);
  if (!isSupportedVersion(v)) {
    throw new FirecrackerError('FIRECRACKER_UNSUPPORTED_VERSION', `${where} is Firecracker ${v.text}, but emberd supports ${SUPPORTED_TEXT} only (its API requests are validated against those versions' specs); install a supported release or pass --backend qemu`);
  }
  return v;
}

/**
 * The snapshot data format each supported minor writes and reads (`SNAPSHOT_VERSION` in
 * src/vmm/src/persist.rs: 9.0.0 at v1.15.1, 10.0.0 at v1.16.1; `firecracker --snapshot-version`
 * prints it). Firecracker loads a state file only if its format has the same major and a minor no
 * higher, so a 1.15 snapshot does not load in 1.16 or the other way round. The driver asks the
 * binary; this table is what the test double answers and what the tests hold the driver to.
 */
export const SNAPSHOT_FORMAT_BY_MINOR: Readonly<Record<string, string>> = { '1.15': '9.0.0', '1.16': '10.0.0' };

/** `PUT /snapshot/load` takes `vsock_override` from 1.16 on (absent from the 1.15.1 swagger). */
export function supportsVsockOverride(v: Pick<FcVersion, 'major' | 'minor'>): boolean {
  return v.major > 1 || (v.major === 1 && v.minor >= 16);
}
