// GET / : what this daemon is and which backend runs VMs, and why; golden snapshots per pack (null
// when off), the warm pool per pack (null when off), admission (boots running and waiting, the
// memory reserve, what the host has available). The shape is responses.ts's daemonInfo.
import type { DaemonInfoAnswer } from './responses.ts';

export type DaemonInfo = DaemonInfoAnswer;
