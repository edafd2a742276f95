// Chooses the VMM backend: --backend, or for "auto" the best one this host can run.
import type { Backend, BackendName } from './backend.ts';
import { QemuBackend } from './qemu/qemu-backend.ts';
import { EmberdError } from '../errors.ts';

export interface SelectOptions {
  backend: BackendName | 'auto';
  qemu?: string;
}

export function selectBackend(o: SelectOptions): Backend {
  if (o.backend === 'firecracker') {
    throw new EmberdError('BOOT_FAILED', 'the firecracker backend is not available in this build yet; use --backend qemu (or auto)');
  }
  // auto: Firecracker needs KVM and a firecracker binary; until its driver lands, auto means QEMU,
  // with KVM when usable and software emulation otherwise.
  return new QemuBackend({ binary: o.qemu, accel: 'auto' });
}
