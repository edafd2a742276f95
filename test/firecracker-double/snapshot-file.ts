// The test double's "microVM state" file (what `PUT /snapshot/create` writes at snapshot_path and
// `PUT /snapshot/load` reads), framed like Firecracker's so that the same checks fail the same way:
//
//   | magic u64 LE | JSON state (UTF-8) | checksum (8 bytes) |
//
// Firecracker's file is | magic | snapshot format version + bitcode state | CRC64 |, with the
// x86_64 magic 0x0710_1984_8664_0000 (src/vmm/src/snapshot/mod.rs, v1.15.1). Differences, on
// purpose: the state is JSON describing the VM's configuration (the device and vCPU state itself
// travels in QEMU's migration stream, which the double keeps in mem_file_path), and the checksum
// is the first 8 bytes of a SHA-256 instead of a CRC64. The load-time checks mirror Firecracker's
// `Snapshot::load`: magic, then the format version (same major, minor no higher), then the checksum,
// with Firecracker's error texts.
import { createHash } from 'node:crypto';

export const SNAPSHOT_MAGIC_X86_64 = 0x0710_1984_8664_0000n;

export interface DoubleVmState {
  /** snapshot data format version, e.g. 9.0.0 (Firecracker 1.15) */
  version: string;
  /** the double's reported Firecracker version when it saved (informational, as in Firecracker) */
  firecracker_version: string;
  machine: Record<string, unknown>;
  boot: { kernel_image_path: string; initrd_path?: string; boot_args?: string };
  drives: { drive_id: string; path_on_host?: string; is_root_device: boolean; is_read_only?: boolean; partuuid?: string }[];
  vsock?: { guest_cid: number; uds_path: string };
  /** how mem_file_path is encoded (the double: QEMU's migration stream through zstd) */
  memory: { encoding: 'qemu-migration+zstd' };
}

export class SnapshotFileError extends Error {}

function checksum(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest().subarray(0, 8);
}

export function encodeVmState(s: DoubleVmState): Buffer {
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(SNAPSHOT_MAGIC_X86_64);
  const body = Buffer.concat([head, Buffer.from(JSON.stringify(s), 'utf8')]);
  return Buffer.concat([body, checksum(body)]);
}

/** Decodes and checks a state file against the format this Firecracker supports; errors read like Firecracker's SnapshotError. */
export function decodeVmState(buf: Buffer, supportedFormat: string): DoubleVmState {
  if (buf.length < 8) throw new SnapshotFileError('IO Error: File too short to contain CRC');
  const data = buf.subarray(0, buf.length - 8);
  if (data.length < 8) throw new SnapshotFileError('An error occured during bitcode serialization: EOF');
  const magic = data.readBigUInt64LE(0);
  if (magic !== SNAPSHOT_MAGIC_X86_64) throw new SnapshotFileError(`Magic value does not match arch: ${magic}`);
  let s: DoubleVmState;
  try {
    s = JSON.parse(data.subarray(8).toString('utf8')) as DoubleVmState;
  } catch (e) {
    throw new SnapshotFileError(`An error occured during bitcode serialization: ${(e as Error).message}`);
  }
  const [maj, min] = String(s.version).split('.').map(Number);
  const [smaj, smin] = supportedFormat.split('.').map(Number);
  if (maj !== smaj || (min ?? 0) > (smin ?? 0)) throw new SnapshotFileError(`Invalid data version: ${s.version}`);
  if (!checksum(data).equals(buf.subarray(buf.length - 8))) throw new SnapshotFileError('CRC64 validation failed');
  return s;
}
