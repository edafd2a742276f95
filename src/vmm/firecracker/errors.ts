// Errors of the Firecracker driver. To the sandbox manager and the HTTP API every one is a
// BOOT_FAILED (the code users match on); `fcCode` says precisely what went wrong, and the message
// starts with it and says what to do.
import { EmberdError } from '../../errors.ts';

export type FirecrackerErrorCode =
  /** no firecracker (or jailer) binary at the given path / on PATH */
  | 'FIRECRACKER_NOT_FOUND'
  /** the binary or its API reports a version outside SUPPORTED_RANGE */
  | 'FIRECRACKER_UNSUPPORTED_VERSION'
  /** the API answered a request with an error (400 + fault_message) */
  | 'FIRECRACKER_API_ERROR'
  /** the API socket did not appear, or a request got no answer in time */
  | 'FIRECRACKER_API_TIMEOUT'
  /** the process exited before the guest was reachable */
  | 'FIRECRACKER_EXITED'
  /** preparing the jail (chroot, links, cgroup) failed */
  | 'FIRECRACKER_JAILER'
  /** a snapshot cannot be saved, or is not one this Firecracker and configuration can load */
  | 'FIRECRACKER_SNAPSHOT';

export class FirecrackerError extends EmberdError {
  readonly fcCode: FirecrackerErrorCode;
  constructor(fcCode: FirecrackerErrorCode, message: string, options?: { cause?: unknown }) {
    super('BOOT_FAILED', `[${fcCode}] ${message}`, options);
    this.name = 'FirecrackerError';
    this.fcCode = fcCode;
  }
}

export function isFirecrackerError(e: unknown, code?: FirecrackerErrorCode): e is FirecrackerError {
  return e instanceof FirecrackerError && (code === undefined || e.fcCode === code);
}
