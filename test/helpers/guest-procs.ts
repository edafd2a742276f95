// Process checks inside a guest, run through its agent (the host's /proc does not see them).
import type { AgentClient } from '../../src/agent/client.ts';
import { eventually } from './daemon.ts';

/** Until none of `pids` is in the guest's /proc: each exited and was reaped (a zombie keeps its entry). */
export function guestGone(agent: AgentClient, pids: number[]): Promise<void> {
  return eventually(async () => (await agent.run({
    argv: ['sh', '-c', 'for p; do [ -e /proc/$p ] && exit 1; done; exit 0', 'sh', ...pids.map(String)], timeoutMs: 30_000,
  })).exitCode === 0, 60_000, `guest processes ${pids.join(' ')} gone`);
}
