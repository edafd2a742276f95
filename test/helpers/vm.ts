// One real microVM (QEMU; TCG where there is no KVM) with its agent handshaken, for tests and
// benchmarks that talk the guest protocol directly rather than through the daemon.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient, type AgentClientOptions, type HelloAck } from '../../src/agent/client.ts';
import { QemuBackend } from '../../src/vmm/qemu/qemu-backend.ts';
import type { VmHandle } from '../../src/vmm/backend.ts';
import { testBootSpec, TEST_BOOT_DEADLINE_MS } from './boot-spec.ts';

export interface TestVm {
  vm: VmHandle;
  agent: AgentClient;
  ack: HelloAck;
  /** SHUTDOWN, wait for the VMM to end, remove the run dir. */
  stop(): Promise<void>;
}

export async function bootTestVm(pack = 'python', agentOptions: AgentClientOptions = {}, backend = new QemuBackend()): Promise<TestVm> {
  const runDir = mkdtempSync('/tmp/emb-vm-');
  const vm = await backend.boot(testBootSpec(`test-${pack}`, join(runDir, 'vm'), { pack }));
  const agent = new AgentClient(vm.control, agentOptions);
  const stop = async () => {
    agent.shutdown();
    await vm.stop(5000);
    rmSync(runDir, { recursive: true, force: true });
  };
  try {
    return { vm, agent, ack: await agent.helloUntil(Date.now() + TEST_BOOT_DEADLINE_MS), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
