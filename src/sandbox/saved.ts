// Paused sandboxes on disk (docs/snapshots.md, "Pause and resume"): one directory per sandbox
// under the daemon's state dir, holding the backend's saved VM (`vm/`), hard links to the kernel,
// initramfs and pack it booted from (so an images rebuild cannot change what it resumes into), and
// `sandbox.json`, written last and renamed into place: a directory without it is an unfinished
// pause and is removed. The record is versioned; one this daemon cannot read is reported, never
// silently dropped.
import { copyFileSync, existsSync, linkSync, realpathSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { AgentState } from '../agent/client.ts';
import { EmberdError } from '../errors.ts';
import type { MachineConfig } from '../vmm/backend.ts';
import type { SavedProcess } from './processes.ts';
import type { GuestLimits } from './sandbox.ts';
import type { SavedSession } from './sessions.ts';

/** Bumped whenever the record or the directory changes meaning. */
export const SAVED_FORMAT = 'emberd-paused/1';
const RECORD = 'sandbox.json';
export const VM_DIR = 'vm';
const FILE_NAMES = { kernel: 'kernel', initramfs: 'initramfs', packImage: 'pack.img' } as const;
let prepared = 0;

/** The agent's state as JSON holds it (held frames in base64). */
export interface SavedAgentState {
  next_channel: number;
  channels: AgentState['channels'];
  held: string[];
}

export interface SavedSandbox {
  format: string;
  id: string;
  pack: string;
  /** SnapshotSupport.fingerprint of the backend that saved it: a resume needs the same. */
  vmm: string;
  backend: string;
  machine: MachineConfig;
  env: Record<string, string>;
  limits: GuestLimits;
  created_at: string;
  paused_at: string;
  /** The lifetime it is given again on resume (0: none). */
  timeout_s: number;
  on_timeout: 'destroy' | 'pause';
  auto_resume: boolean;
  /** Its egress (`network` on create), built again at resume; absent: no network device. */
  network?: { allow: string[]; rate_mbit?: number };
  /** Bytes of the saved VM on disk. */
  bytes: number;
  pause_ms: number;
  processes: SavedProcess[];
  sessions: SavedSession[];
  agent: SavedAgentState;
}

/** The boot files a saved VM resumes with, linked into its directory. */
export interface SavedFiles { kernel: string; initramfs: string; packImage: string }

export function toSavedAgent(s: AgentState): SavedAgentState {
  return { next_channel: s.nextChannel, channels: s.channels, held: s.held.map((b) => b.toString('base64')) };
}

export function fromSavedAgent(s: SavedAgentState): AgentState {
  return { nextChannel: s.next_channel, channels: s.channels, held: s.held.map((b) => Buffer.from(b, 'base64')) };
}

/** One paused sandbox found at start: its record, or why it cannot be resumed. */
export type FoundSaved = { dir: string; record: SavedSandbox } | { dir: string; id: string; error: { code: 'SAVED_STATE_INCOMPATIBLE' | 'SAVED_STATE_CORRUPT'; message: string }; pausedAt?: string; pack?: string };

export class SavedStore {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  dirOf(id: string): string {
    return join(this.root, id);
  }

  /**
   * A fresh directory for `id` with the boot files linked in (they may be the links of its
   * present directory: linked into a temporary one first, which then takes its place).
   */
  prepare(id: string, files: SavedFiles): { dir: string; vmDir: string; files: SavedFiles } {
    const dir = this.dirOf(id);
    const tmp = `${dir}.tmp-${process.pid}-${prepared++}`;
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    try {
      for (const k of ['kernel', 'initramfs', 'packImage'] as const) linkOrCopy(files[k], join(tmp, FILE_NAMES[k]));
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    return { dir, vmDir: join(dir, VM_DIR), files: this.filesOf(dir) };
  }

  /**
   * A sandbox resumed from `id`'s directory: its saved VM and record go (the disk is reclaimed),
   * the boot files its VM maps stay for a later pause or fork until the sandbox is deleted. A
   * daemon that starts removes such directories (no record: nothing to resume).
   */
  resumed(id: string): void {
    rmSync(join(this.dirOf(id), RECORD), { force: true });
    rmSync(join(this.dirOf(id), VM_DIR), { recursive: true, force: true });
  }

  /** The boot files inside a saved sandbox's directory. */
  filesOf(dir: string): SavedFiles {
    return { kernel: join(dir, FILE_NAMES.kernel), initramfs: join(dir, FILE_NAMES.initramfs), packImage: join(dir, FILE_NAMES.packImage) };
  }

  /** Writes the record last (temp + rename): from then on the pause is complete. */
  commit(dir: string, record: SavedSandbox): void {
    const tmp = join(dir, `${RECORD}.tmp`);
    writeFileSync(tmp, JSON.stringify(record) + '\n', { mode: 0o600 });
    renameSync(tmp, join(dir, RECORD));
  }

  remove(id: string): void {
    rmSync(this.dirOf(id), { recursive: true, force: true });
  }

  /** Bytes the saved VMs take (the linked boot files are the images' own). */
  bytes(): number {
    let total = 0;
    for (const name of this.names()) total += dirBytes(join(this.root, name, VM_DIR));
    return total;
  }

  /**
   * Every paused sandbox on disk, for a daemon that starts: unfinished pauses (no record) are
   * removed; records of another format or that do not parse are reported with their code.
   */
  scan(): FoundSaved[] {
    const found: FoundSaved[] = [];
    for (const name of this.names()) {
      const dir = join(this.root, name);
      if (!existsSync(join(dir, RECORD))) { rmSync(dir, { recursive: true, force: true }); continue; }
      found.push(this.read(dir));
    }
    return found;
  }

  /** One paused sandbox's record, or why it cannot be resumed (a missing record is corrupt). */
  read(dir: string): FoundSaved {
    const name = basename(dir);
    let raw: Partial<SavedSandbox>;
    try {
      raw = JSON.parse(readFileSync(join(dir, RECORD), 'utf8')) as Partial<SavedSandbox>;
      if (typeof raw !== 'object' || raw === null) throw new Error('not a JSON object');
    } catch (e) {
      return { dir, id: name, error: { code: 'SAVED_STATE_CORRUPT', message: `the saved state of ${name} cannot be read (${(e as Error).message}); delete the sandbox` } };
    }
    if (raw.format !== SAVED_FORMAT) {
      return { dir, id: name, pausedAt: raw.paused_at, pack: raw.pack, error: { code: 'SAVED_STATE_INCOMPATIBLE', message: `sandbox ${name} was paused by an emberd whose saved format is ${JSON.stringify(raw.format)}; this one reads ${SAVED_FORMAT}: resume it with that version, or delete it` } };
    }
    if (raw.id !== name || !raw.pack || !raw.machine || !raw.agent || !Array.isArray(raw.processes) || !Array.isArray(raw.sessions)
      || (raw.network !== undefined && !Array.isArray(raw.network?.allow))) {
      return { dir, id: name, error: { code: 'SAVED_STATE_CORRUPT', message: `the saved state of ${name} is incomplete; delete the sandbox` } };
    }
    return { dir, record: raw as SavedSandbox };
  }

  private names(): string[] {
    try {
      return readdirSync(this.root).filter((n) => n.startsWith('sb_') && !n.includes('.tmp-'));
    } catch {
      return [];
    }
  }
}

/** A hard link (free, and immune to the images being rebuilt), or a copy across filesystems. */
function linkOrCopy(src: string, dst: string): void {
  try {
    linkSync(realpathSync(src), dst); // the file itself, not a symlink to where the images are
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM') throw new EmberdError('INTERNAL', `cannot keep ${src} for the paused sandbox: ${(e as Error).message}`);
    copyFileSync(realpathSync(src), dst);
  }
}

export function dirBytes(dir: string): number {
  let total = 0;
  let entries: string[];
  try { entries = readdirSync(dir); } catch { return 0; }
  for (const name of entries) {
    const p = join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) continue;
    total += st.isDirectory() ? dirBytes(p) : st.blocks * 512;
  }
  return total;
}
