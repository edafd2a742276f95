import type { BackendInfo } from '../../vmm/backend.ts';

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
}
