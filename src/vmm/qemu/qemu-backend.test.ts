// The QEMU backend against the shared backend conformance suite, on real VMs.
import { QemuBackend } from './qemu-backend.ts';
import { runBackendConformance } from '../conformance.ts';
import { testImages } from '../../../test/helpers/images.ts';

const images = testImages();
runBackendConformance('qemu', () => new QemuBackend(), {
  kernel: images.kernel,
  initramfs: images.initramfs,
  pack: images.packs.get('shell')!.image,
});
