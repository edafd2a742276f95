// The machine every test VM boots: the built images, 1 vCPU, 256 MiB, a 90 s deadline (TCG on a
// loaded 2-core host). One place, so a change of the test machine is one edit.
import type { BootSpec } from '../../src/vmm/backend.ts';
import { testImages } from './images.ts';

export const TEST_MACHINE = { vcpus: 1, memoryMib: 256 } as const;
export const TEST_BOOT_DEADLINE_MS = 90_000;

/** A BootSpec for `pack` with the built images; `over` replaces any field. */
export function testBootSpec(id: string, runDir: string, over: Partial<BootSpec> & { pack?: string } = {}): BootSpec {
  const images = testImages();
  const { pack = 'python', ...rest } = over;
  const image = images.packs.get(pack);
  if (!image) throw new Error(`no built pack "${pack}"; built: ${[...images.packs.keys()].join(', ')}`);
  return {
    id,
    runDir,
    kernel: images.kernel,
    initramfs: images.initramfs,
    packImage: image.image,
    machine: { ...TEST_MACHINE },
    kernelArgs: [],
    deadline: Date.now() + TEST_BOOT_DEADLINE_MS,
    ...rest,
  };
}
