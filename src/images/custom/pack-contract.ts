// What a root tree must hold for emberd to use it as a pack (docs/packs.md, "What a pack needs").
// emberd-init is PID 1 from the initramfs and mounts the pack read-only under a tmpfs overlay, so a
// pack needs no init of its own; what the daemon runs in it is:
//   - `code` execs: the interpreter argv from /etc/emberd/interpreter (one word per line), its
//     first word found on the guest's PATH (or absolute);
//   - the files API: `sh -c SCRIPT` with cat, stat, mkdir, chmod, mv, rm, rmdir, tar, xargs,
//     printf (src/sandbox/files/scripts.ts);
//   - argv execs: whatever the caller names.

import { CustomPackError, type CustomPackErrorCode } from './errors.ts';
import { statInRoot, mkdirInRoot, writeFileInRoot } from './root-path.ts';

/** The PATH every exec starts with (guest/src/spawn.c). */
export const GUEST_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'] as const;

/** The programs the files API runs (src/sandbox/files/scripts.ts), `sh` first. */
export const FILES_API_TOOLS = ['sh', 'cat', 'stat', 'mkdir', 'chmod', 'mv', 'rm', 'rmdir', 'tar', 'xargs', 'printf'] as const;

/** Directories the guest mounts over or expects (it would create them in the overlay, too). */
const MOUNT_POINTS: [string, number][] = [
  ['/dev', 0o755],
  ['/proc', 0o555],
  ['/sys', 0o555],
  ['/run', 0o755],
  ['/tmp', 0o1777],
  ['/root', 0o700],
  ['/etc/emberd', 0o755],
];

/**
 * Where `program` (a name looked up on the guest's PATH and on `envPath`, the pack's own PATH if it
 * sets one, or an absolute path) is an executable file in the tree; null if nowhere.
 */
export async function findProgram(root: string, program: string, envPath = ''): Promise<string | null> {
  const dirs = [...GUEST_PATH, ...envPath.split(':').filter((d) => d.startsWith('/'))];
  const candidates = program.includes('/') ? [program] : dirs.map((d) => `${d}/${program}`);
  for (const c of candidates) {
    const st = await statInRoot(root, c);
    if (st?.isFile() === true && (st.mode & 0o111) !== 0) return c;
  }
  return null;
}

/** The files API tools the tree lacks. */
export async function missingTools(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const t of FILES_API_TOOLS) if ((await findProgram(root, t)) === null) out.push(t);
  return out;
}

/** emberd's files in a pack: the interpreter, the pack's name, the mount points. */
export async function writeEmberdFiles(root: string, name: string, interpreter: readonly string[]): Promise<void> {
  for (const [d, mode] of MOUNT_POINTS) await mkdirInRoot(root, d, mode);
  await writeFileInRoot(root, '/etc/emberd/interpreter', interpreter.map((w) => `${w}\n`).join(''));
  await writeFileInRoot(root, '/etc/emberd/pack', `${name}\n`);
}

/** Throws unless the interpreter's program is in the tree (a message that says how to fix it). */
export async function checkInterpreter(
  root: string,
  interpreter: readonly string[],
  env: Readonly<Record<string, string>>,
  code: CustomPackErrorCode,
  fix: string,
): Promise<void> {
  const program = interpreter[0] as string;
  if ((await findProgram(root, program, env['PATH'])) !== null) return;
  const where = program.includes('/') ? program : `any of ${GUEST_PATH.join(':')}`;
  throw new CustomPackError(code, `the interpreter ${JSON.stringify(interpreter.join(' '))} cannot run: no executable ${program} in ${where} of the pack; ${fix}`);
}
