import type { BackendInfo } from '../../vmm/backend.ts';
import type { SnapshotView } from '../../sandbox/snapshots.ts';
import type { PoolView } from '../../sandbox/pool.ts';
import type { AdmissionView } from '../../sandbox/manager.ts';

/** GET / : what this daemon is and which backend runs VMs, and why. */
export interface DaemonInfo {
  name: 'emberd';
  version: string;
  api_version: 1;
  backend: BackendInfo;
  language_packs: string[];
  default_language_pack: string;
  sandboxes: { live: number; limit: number };
  machine: { vcpus: number; memory_mib: number };
  /** Golden snapshot per pack (null when snapshots are off or the backend has none). */
  snapshots: Record<string, SnapshotView> | null;
  /** Warm pool per pack (null when the pool is off). */
  pool: Record<string, PoolView> | null;
  /** Boots running and waiting, the memory reserve and what the host has available. */
  admission: AdmissionView;
}
