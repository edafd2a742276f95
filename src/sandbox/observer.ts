// What the sandbox manager tells an observer (the daemon's metrics, src/daemon/metrics.ts) as it
// works: events only, never a sandbox id, so that whatever listens keeps bounded label sets.
// State that can be read at any moment (sandboxes, pool, snapshots) is not pushed here: the
// observer asks the manager for it when it needs it.

export type { BootMode } from './sandbox.ts';
import type { BootMode } from './sandbox.ts';

/** How an exec or a session cell ended: exit 0, another exit status or a signal, its timeout, or no exit at all. */
export type ExecOutcome = 'ok' | 'nonzero_exit' | 'timeout' | 'error';

/** A one-shot exec (buffered or streamed) or a session cell; background processes are not counted. */
export type ExecKind = 'exec' | 'session';

/**
 * Why a VM's VMM process ended: a DELETE, the sandbox's deadline, the daemon stopping, on its own
 * while in use (crashed), stopped after its agent was lost, during a failed start, dropped by the
 * warm pool, a snapshot restore abandoned for a cold boot, or a golden VM (saved, or failed).
 */
export type VmEndReason = 'deleted' | 'expired' | 'shutdown' | 'crashed' | 'agent_lost' | 'boot_failed' | 'pool_discarded' | 'restore_failed' | 'golden' | 'paused';

export interface SandboxObserver {
  /** A create answered with a ready sandbox after `seconds` (admission wait and boot included). */
  sandboxCreated(bootMode: BootMode, pack: string, seconds: number): void;
  /** A create failed with this error code (a refusal before booting included). */
  createFailed(code: string): void;
  /** An exec or a session cell the manager accepted ended, `seconds` after it was accepted. */
  execDone(kind: ExecKind, outcome: ExecOutcome, seconds: number): void;
  /** A VMM process exited. */
  vmEnded(reason: VmEndReason): void;
}
