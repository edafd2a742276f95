// One real microVM (QEMU; TCG where there is no KVM) with its agent handshaken, for tests and
// benchmarks that talk the guest protocol directly rather than through the daemon.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient, type AgentClientOptions, type HelloAck } from '../../src/agent/client.ts';
import { QemuBackend } from '../../src/vmm/qemu/qemu-backend.ts';
import type { VmHandle } from '../../src/vmm/backend.ts';
import { testImages } from './images.ts';

export interface TestVm {
  vm: VmHandle;
  agent: AgentClient;
  ack: HelloAck;
  /** SHUTDOWN, wait for the VMM to end, remove the run dir. */
  stop(): Promise<void>;
}

export async function bootTestVm(pack = 'python', agentOptions: AgentClientOptions = {}, backend = new QemuBackend()): Promise<TestVm> {
  const images = testImages();
  const runDir = mkdtempSync('/tmp/emb-vm-');
  const vm = await backend.boot({
    id: `test-${pack}`,
    runDir: join(runDir, 'vm'),
    kernel: images.kernel,
    initramfs: images.initramfs,
    packImage: images.packs.get(pack)!.image,
    machine: { vcpus: 1, memoryMib: 256 },
    kernelArgs: [],
    deadline: Date.now() + 90_000,
  });
  const agent = new AgentClient(vm.control, agentOptions);
  const stop = async () => {
    agent.shutdown();
    await vm.stop(5000);
    rmSync(runDir, { recursive: true, force: true });
  };
  try {
    return { vm, agent, ack: await agent.helloUntil(Date.now() + 90_000), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
