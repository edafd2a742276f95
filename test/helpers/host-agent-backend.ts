// A test backend with no VM: the real emberd-init binary in host mode (`--listen-unix`), so the
// manager and the conformance suite can be exercised in milliseconds. The guest is not mocked;
// only the VMM is absent. VM behaviour itself is covered by the qemu tests.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, BackendInfo, BootSpec, VmExit, VmHandle } from '../../src/vmm/backend.ts';
import { connectUnix } from '../../src/agent/connect.ts';
import { spawnVmm } from '../../src/vmm/vmm-process.ts';
import { EmberdError } from '../../src/errors.ts';
import type { Socket } from 'node:net';

export const AGENT_BINARY = fileURLToPath(new URL('../../guest/build/emberd-init', import.meta.url));

export class HostAgentBackend implements Backend {
  readonly name = 'qemu' as const; // reported as qemu: the manager only needs a name
  readonly info: BackendInfo = { name: 'qemu', binary: AGENT_BINARY, version: 'host-agent', accel: 'none', reason: 'test backend', warnings: [] };

  async boot(spec: BootSpec): Promise<VmHandle> {
    if (!existsSync(spec.kernel)) throw new EmberdError('BOOT_FAILED', `kernel ${spec.kernel} does not exist`);
    mkdirSync(spec.runDir, { recursive: true });
    const sock = join(spec.runDir, 'control.sock');
    const proc = spawnVmm(AGENT_BINARY, ['--listen-unix', sock]);
    let control: Socket | undefined;
    const exited: Promise<VmExit> = proc.exited.then(({ code, signal }) => {
      control?.destroy();
      rmSync(sock, { force: true });
      return { code, signal, reason: signal ? `killed by ${signal}` : `exit code ${code}` };
    });
    control = await connectUnix(sock, spec.deadline);
    let stopping: Promise<VmExit> | undefined;
    return {
      pid: proc.pid,
      control,
      exited,
      consoleTail: (n) => proc.console.tail(n),
      resources: () => ({ pid: proc.pid, paths: [sock] }),
      stop: (graceMs) => (stopping ??= (async () => {
        if (proc.isRunning() && graceMs > 0) await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs))]);
        if (proc.isRunning()) proc.child.kill('SIGKILL');
        return exited;
      })()),
    };
  }
}
