// SandboxManagers on the host-agent backend (the real guest agent as a host process, no VM) for
// the manager's own tests: fast enough to test every transition. Each file gets one temp base;
// every manager it made is shut down, and the base removed, when the file's tests end.
import { after } from 'node:test';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../src/log.ts';
import { SandboxManager, type ManagerConfig, type SandboxOptions } from '../../src/sandbox/manager.ts';
import { HostAgentBackend } from '../../src/vmm/host-agent/host-agent-backend.ts';

export type TestManagerOptions = Partial<Omit<ManagerConfig, 'sandboxes'>> & { sandboxes?: Partial<SandboxOptions> };

export interface TestManagers {
  /** A new manager: packs shell and python (both boot the agent), limits small, no pool. */
  make(over?: TestManagerOptions): SandboxManager;
  /** The empty file that stands in for the kernel and the images. */
  kernel: string;
  base: string;
}

export function testManagers(prefix = 'emb-mgr-'): TestManagers {
  const base = mkdtempSync(`/tmp/${prefix}`);
  const kernel = join(base, 'vmlinux');
  writeFileSync(kernel, '');
  const made: SandboxManager[] = [];
  // A failing case must not leave agent processes holding the test process open.
  after(async () => {
    await Promise.all(made.map((m) => m.shutdown()));
    rmSync(base, { recursive: true, force: true });
  });
  let n = 0;
  return {
    base,
    kernel,
    make(over = {}) {
      const { sandboxes, ...rest } = over;
      const m = new SandboxManager({
        backend: new HostAgentBackend(),
        images: { kernel, initramfs: kernel, packs: new Map([['shell', { name: 'shell', image: kernel }], ['python', { name: 'python', image: kernel }]]) },
        runBase: join(base, `run${n++}`),
        sandboxes: { defaultPack: 'shell', machine: { vcpus: 1, memoryMib: 64 }, maxVcpus: 4, maxMemoryMib: 1024, maxDiskMib: 1024, bootTimeoutMs: 10_000, max: 4, poolSize: 0, timeoutS: 3600, maxTimeoutS: 86_400, ...sandboxes },
        exec: { defaultTimeoutMs: 10_000, maxTimeoutMs: 60_000, outputCap: 1 << 20 },
        admission: { maxConcurrentBoots: 8, queueTimeoutMs: 60_000, memoryReserveMib: 0 },
        maxUploadBytes: 1 << 20,
        log: silentLogger,
        ...rest,
      });
      made.push(m);
      return m;
    },
  };
}
