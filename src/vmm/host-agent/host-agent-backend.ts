// A backend with no VM, for tests only: the real emberd-init binary runs as a host process in host
// mode (`--listen-unix`), so the manager and the conformance suite run in milliseconds. The guest
// agent is not mocked; only the VMM is absent, and with it all isolation: it is never selectable
// from the daemon's flags. VM behaviour itself is covered by the qemu and firecracker backends.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, BackendInfo, BootSpec, VmExit, VmHandle } from '../backend.ts';
import { connectUnix } from '../../agent/connect.ts';
import { spawnVmm } from '../vmm-process.ts';
import { EmberdError } from '../../errors.ts';
import { settlesWithin } from '../../settles-within.ts';
import type { Socket } from 'node:net';

export const AGENT_BINARY = fileURLToPath(new URL('../../../guest/build/emberd-init', import.meta.url));

export class HostAgentBackend implements Backend {
  readonly name = 'host-agent' as const;
  readonly info: BackendInfo = { name: 'host-agent', binary: AGENT_BINARY, version: 'host-agent', accel: 'none', reason: 'test backend: the guest agent as a host process, no VM', warnings: [] };

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
        if (proc.isRunning() && graceMs > 0) await settlesWithin(exited, graceMs);
        if (proc.isRunning()) proc.child.kill('SIGKILL');
        return exited;
      })()),
    };
  }
}
